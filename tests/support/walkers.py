"""Person-like silhouette sequences for tests: a torso ellipse and two swinging legs, shaped by a seed.

Cheap and deterministic, not realistic (the synthetic generator, synth/, is for that): distinct seeds give
distinct bodies and so distinct embeddings even through a random-weight model, and `walk` changes only
the gait phase, so two walks of one seed stay closer to each other than to another seed's.
"""

from __future__ import annotations

import numpy as np


def walking_sequence(seed: int, frames: int = 8, *, walk: int = 0, width: int = 44) -> np.ndarray:
    """(T, 64, width) uint8 masks of 0/255. At width 44 they are model frames (no alignment needed); at
    64 they are aligned frames, which the model's cut reduces to the same body."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :width]  # (64, W) each
    body_w, height, centre = rng.uniform(5, 12), rng.uniform(14, 24), rng.uniform(16, 28) + (width - 44) / 2
    phase, sway, leg = rng.uniform(0, 2 * np.pi) + 0.7 * walk, rng.uniform(2, 8), rng.uniform(2, 5)
    out = np.zeros((frames, 64, width), np.uint8)
    for t in range(frames):
        swing = sway * np.sin(phase + t / 2)
        torso = ((yy - 40 + height) / height) ** 2 + ((xx - centre) / body_w) ** 2 < 1
        below = np.clip((yy - 38) / 26, 0, None)
        legs = (yy > 38) & (
            (np.abs(xx - centre + 3 - swing * below) < leg) | (np.abs(xx - centre - 3 + swing * below) < leg)
        )
        out[t] = (torso | legs) * 255
    return out

"""Capture shifts: what other cameras do to a silhouette sequence, as augmentations and as test variants.

A model trained on CASIA-B alone meets, elsewhere: people 30-80 px tall (silhouettes coarsened to 32 x 22
and shown upsampled, blocky edges); one gait cycle per sample (about 10 frames); other frame rates;
outdoor background subtraction (thinner or fatter bodies, holes, blobs, shadows at the feet, a limb
missing). Each is a function of a (T, 64, 44) uint8 model-frame sequence and a generator, numpy + cv2
only (it runs in data-loader workers). Training draws them at random (`ShiftConfig`, the `augment`
section of a supervised config); evaluation applies one at a time, with fixed settings, to the test
sequences of a dev split (`TEST_SHIFTS`), so a model and GEI are scored on the same shifted data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from gaitlu.errors import ConfigError
from train.config import ConfigModel

LOW_RES = (22, 32)  # (width, height): a person about 35 px tall, as OpenCV sizes are given
ONE_CYCLE = 10  # frames of one gait cycle at 25 fps
_ELLIPSE3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


class ShiftConfig(ConfigModel):
    """Per-clip probabilities of each shift in training (each drawn independently)."""

    p_low_res: float = 0.3  # coarsen to 32 x 22 and upsample back
    p_short: float = 0.3  # the clip's frames all come from one gait cycle's window
    p_thickness: float = 0.2  # erode (thinner, as outdoor masks are) or dilate the body by one pixel
    p_holes: float = 0.2  # a few holes that persist through the walk (clothes like the background)
    p_blobs: float = 0.1  # a blob stuck on some frames, or a shadow joined to the feet
    p_band: float = 0.2  # a random horizontal band erased (an occluder, a lost limb segment)
    p_flip: float = 0.0  # left-right mirror (walking the other way)

    def model_post_init(self, context: Any, /) -> None:
        for name, value in dict(self).items():
            if not 0 <= value <= 1:
                raise ConfigError(f"augment.{name} must be in [0, 1], got {value}")


def low_res(seq: np.ndarray, rng: np.random.Generator, blocky: bool | None = None) -> np.ndarray:
    """Coarsen each frame to 32 x 22 (area average, then thresholded as a low-resolution mask is) and
    upsample back: nearest (blocky edges) or bilinear (soft edges)."""
    small = np.stack([cv2.resize(f, LOW_RES, interpolation=cv2.INTER_AREA) for f in seq])
    small = np.where(small >= 128, 255, 0).astype(np.uint8)
    if blocky is None:
        blocky = bool(rng.random() < 0.5)
    mode = cv2.INTER_NEAREST if blocky else cv2.INTER_LINEAR
    height, width = seq.shape[1:]
    return np.stack([cv2.resize(f, (width, height), interpolation=mode) for f in small])


def one_cycle(seq: np.ndarray, rng: np.random.Generator, frames: int = ONE_CYCLE) -> np.ndarray:
    """A window of `frames` consecutive frames at a random start (the whole sequence when shorter)."""
    if len(seq) <= frames:
        return seq
    start = int(rng.integers(0, len(seq) - frames + 1))
    return seq[start : start + frames]


def half_rate(seq: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every second frame from a random phase: a camera at half the frame rate."""
    return seq[int(rng.integers(0, 2)) :: 2] if len(seq) > 1 else seq


def thickness(seq: np.ndarray, rng: np.random.Generator, thinner: bool | None = None) -> np.ndarray:
    """The whole body one pixel thinner (eroded) or fatter (dilated)."""
    if thinner is None:
        thinner = bool(rng.random() < 0.7)  # outdoor masks are more often thinner than CASIA-B's
    op = cv2.erode if thinner else cv2.dilate
    return np.stack([op(f, _ELLIPSE3) for f in seq])


def holes(seq: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One to three elliptic holes fixed relative to the frame (the aligned body), through the walk."""
    height, width = seq.shape[1:]
    mask = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        centre = (int(rng.integers(8, width - 8)), int(rng.integers(10, height - 6)))
        axes = (int(rng.integers(2, 6)), int(rng.integers(2, 8)))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    out = seq.copy()
    out[:, mask > 0] = 0
    return out


def blobs(seq: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A shadow joined to the feet (the whole walk) or a blob on a third of the frames."""
    height, width = seq.shape[1:]
    out = seq.copy()
    if rng.random() < 0.5:
        shadow = np.zeros((height, width), np.uint8)
        centre = (int(width / 2 + rng.integers(-10, 11)), height - int(rng.integers(1, 4)))
        cv2.ellipse(shadow, centre, (int(rng.integers(8, 18)), int(rng.integers(2, 4))), 0, 0, 360, 255, -1)
        joined: np.ndarray = np.maximum(out, shadow[None])
        return joined
    for t in np.flatnonzero(rng.random(len(seq)) < 0.33):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(out[t], centre, int(rng.integers(2, 6)), 255, -1)
    return out


def band(seq: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A horizontal band of 4-12 rows erased in every frame."""
    height = seq.shape[1]
    rows = int(rng.integers(4, 13))
    top = int(rng.integers(0, height - rows))
    out = seq.copy()
    out[:, top : top + rows] = 0
    return out


def flip(seq: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return seq[:, :, ::-1].copy()


# Order of application: frame choice first, then the body, then what the camera does to the mask.
_BODY: tuple[tuple[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]], ...] = (
    ("p_thickness", thickness),
    ("p_holes", holes),
    ("p_blobs", blobs),
    ("p_band", band),
    ("p_flip", flip),
    ("p_low_res", low_res),
)


def training_clip(seq: np.ndarray, frames: int, config: ShiftConfig, rng: np.random.Generator) -> np.ndarray:
    """A (frames, 64, 44) uint8 training clip: `frames` frames drawn from the sequence (or from one gait
    cycle's window of it), sorted, then each shift applied with its probability."""
    source = one_cycle(seq, rng) if rng.random() < config.p_short else seq
    chosen = np.sort(rng.choice(len(source), size=frames, replace=len(source) < frames))
    clip = source[chosen]
    for name, shift in _BODY:
        if rng.random() < getattr(config, name):
            clip = shift(clip, rng)
    return np.ascontiguousarray(clip)


def _segmentation(seq: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The test variant of outdoor background subtraction: thinner, holed, with a shadow or blobs."""
    return blobs(holes(thickness(seq, rng, thinner=True), rng), rng)


# Test variants of a dev split: name -> shift with its settings fixed (its draws seeded per sequence).
TEST_SHIFTS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "low-res": lambda seq, rng: low_res(seq, rng, blocky=True),
    "one-cycle": one_cycle,
    "half-rate": half_rate,
    "segmentation": _segmentation,
    "low-res + one-cycle": lambda seq, rng: low_res(one_cycle(seq, rng), rng, blocky=True),
}


def shifted(sequences: list[np.ndarray], name: str, seed: int = 0) -> list[np.ndarray]:
    """Every sequence under test shift `name`, each with its own generator (seed, index): repeatable."""
    if name not in TEST_SHIFTS:
        raise ConfigError(f"unknown shift {name!r}; known: {', '.join(TEST_SHIFTS)}")
    shift = TEST_SHIFTS[name]
    return [shift(seq, np.random.default_rng([seed, i])) for i, seq in enumerate(sequences)]

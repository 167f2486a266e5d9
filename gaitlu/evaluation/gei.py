"""Gait Energy Image baseline: the mean silhouette of a sequence, compared with Euclidean distance.

A GEI (Han and Bhanu, TPAMI 2006) has no learned parameters, so it is the floor any learned embedding
must clear; on real CASIA-B it scores about 23/16/7 Rank-1 (NM/BG/CL) under the standard protocol.
"""

from __future__ import annotations

import numpy as np

GEI_FRAME_SHAPE = (64, 44)


def gait_energy_image(frames: np.ndarray) -> np.ndarray:
    """(T, 64, 44) uint8 model frames -> (64, 44) float32 mean silhouette in [0, 1]."""
    if frames.ndim != 3 or frames.shape[1:] != GEI_FRAME_SHAPE or len(frames) == 0:
        raise ValueError(f"expected (T, 64, 44) model frames with T >= 1, got shape {frames.shape}")
    gei: np.ndarray = frames.mean(axis=0, dtype=np.float32) / 255.0
    return gei


def gei_embed(batch: list[np.ndarray]) -> np.ndarray:
    """The `embed` contract: a batch of model-frame sequences -> (N, 1, 64*44) float32, one part."""
    geis = np.stack([gait_energy_image(frames) for frames in batch])  # (N, 64, 44)
    return geis.reshape(len(batch), 1, -1)  # (N, 1, 2816)

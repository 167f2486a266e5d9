"""Sequences for int8 calibration and for measuring reduced-precision variants.

Static quantisation fixes one scale per tensor from the value ranges seen here, so these must be real
(or realistic synthetic) silhouettes, never noise: noise spans ranges real frames never reach. Without
`--calibration DIR` the synth package renders walkers (real CMU motion capture, segmentation noise,
OpenGait alignment). Variants are measured on a labelled synthetic set (cosine and Rank-1 versus fp32)
plus, when given, the real sequences that did not calibrate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.errors import ExportError
from gaitlu.errors import SequenceError
from gaitlu.preprocess import to_float, to_model_frames
from gaitlu.sequence import iter_sequence_files, load_sequence
from synth.identity import identity_for, sequence_rng
from synth.render import render_sequence

logger = logging.getLogger(__name__)

CALIBRATION_SEQUENCES = 16  # docs/stack.md: static int8 calibrated well on 16-100 sequences
WINDOW_FRAMES = 30  # a window per sequence: ranges come from poses, not from sequence length
WALKS_PER_SUBJECT = 4  # labelled set: two views x two walks each
VIEWS = (36.0, 90.0)
CALIBRATION_SEED, LABELLED_SEED = 101, 202  # disjoint synthetic people for the two roles


def window(frames: np.ndarray, length: int = WINDOW_FRAMES) -> np.ndarray:
    """The centred `length`-frame window of (T, 64, 44) frames (all of them when shorter)."""
    start = max(0, (len(frames) - length) // 2)
    return frames[start : start + length]


def load_calibration(folder: Path, count: int = 2 * CALIBRATION_SEQUENCES) -> list[np.ndarray]:
    """Up to `count` sequences under `folder` as (T, 64, 44) float32 in [0, 1] model input.

    Unreadable files are skipped with a warning; none readable is an ExportError.
    """
    if not folder.is_dir():
        raise ExportError(f"calibration folder not found: {folder}")
    sequences = []
    for path in iter_sequence_files(folder):
        try:
            model_frames = to_model_frames(load_sequence(path))
        except SequenceError as exc:
            logger.warning("calibration: skipped %s", exc)
            continue
        sequences.append(to_float(window(model_frames)))
        if len(sequences) == count:
            break
    if not sequences:
        raise ExportError(f"no readable silhouette sequences under {folder} (.pkl, .npy, .npz, PNG folders)")
    logger.info("calibration: %d sequences from %s", len(sequences), folder)
    return sequences


def _render(seed: int, subject: int, walk: int) -> np.ndarray:
    """One synthetic walk as (WINDOW_FRAMES, 64, 44) float32 model input."""
    view = VIEWS[walk % len(VIEWS)]
    aligned = render_sequence(
        identity_for(seed, subject), view, "nm", WINDOW_FRAMES, sequence_rng(seed, subject, walk)
    )  # (T, 64, 64)
    return to_float(to_model_frames(aligned))


def synthetic_calibration(count: int = CALIBRATION_SEQUENCES) -> list[np.ndarray]:
    """`count` synthetic walks, one per person."""
    return [_render(CALIBRATION_SEED, subject, 0) for subject in range(count)]


@dataclass(frozen=True)
class LabelledSet:
    sequences: list[np.ndarray]  # (T, 64, 44) float32
    subjects: np.ndarray  # (N,) subject number per sequence


def synthetic_labelled(subjects: int) -> LabelledSet:
    """`subjects` synthetic people, WALKS_PER_SUBJECT walks each (two views), for Rank-1."""
    pairs = [(s, w) for s in range(subjects) for w in range(WALKS_PER_SUBJECT)]
    return LabelledSet([_render(LABELLED_SEED, s, w) for s, w in pairs], np.array([s for s, _ in pairs]))

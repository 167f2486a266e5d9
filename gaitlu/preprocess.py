"""OpenGait's silhouette pretreatment: raw masks -> aligned 64x64 frames -> 64x44 model input.

Conventions (OpenGait issue #158 is about crops applied silently twice or not at all, so all are explicit):
- aligned frame: 64 rows from the top to the bottom of the person, 64 columns centred on the column where
  the person's cumulative horizontal mass passes half (that column is index 32), zero padding at borders;
- model frame: the aligned frame minus 10 columns each side (columns 10..53) -> 64x44, as OpenGait's
  `BaseSilCuttingTransform` and GaitLU-1M's `silhouette_cut_pkl` tree;
- `to_model_frames` decides by frame size alone: 64x44 is model input already, 64x64 is aligned already,
  anything else is raw and gets aligned. A raw mask that happens to be 64x64 is therefore NOT re-aligned:
  align it with `align_sequence` first.

One deliberate difference from OpenGait's `datasets/pretreatment.py`: we crop the columns to the person
too before resizing, where OpenGait resizes the full frame width. The result then depends only on the
person, not on where they stand in the frame (OpenGait's width rounding shifts the resampling grid with
the frame width); the two differ by sub-pixel resampling only.
"""

from __future__ import annotations

import logging
from collections import Counter

import cv2
import numpy as np

from gaitlu.errors import SequenceError

logger = logging.getLogger(__name__)

FRAME_HEIGHT = 64
ALIGNED_WIDTH = 64
MODEL_WIDTH = 44
CUT = 10  # columns dropped from each side of an aligned frame: 64 - 2 * 10 = 44
EMPTY_FRAME_SUM = 10_000  # OpenGait drops frames whose pixel sum is at most this (about 40 pixels at 255)
# A person box outside these holds no usable walker (noise, a strip, a flat band) and is dropped like an
# empty frame. The aspect bound also bounds the work: a box is resized to at most 64 x 256 pixels (a
# 1 x 4096 box would become 64 x 262,144, ~0.1 s per frame).
MIN_PERSON_HEIGHT = 16  # pixels; a walker in a 120 x 160 video is ~80, a far one in 1080p ~60
MAX_PERSON_ASPECT = 4.0  # box width / height: walking people are 0.3-1.0, with a bag or a coat ~1.2
_HALF = ALIGNED_WIDTH // 2
_DROPPED = {  # why align_frame found no person, as align_sequence reports it
    "empty": "hold no silhouette (pixel sum <= 10000)",
    "short": f"have a person box under {MIN_PERSON_HEIGHT} px tall",
    "flat": f"have a person box over {MAX_PERSON_ASPECT:g}x wider than tall",
    "thin": "have a person box under 1 px wide at height 64",
}


def _check_frames(seq: np.ndarray) -> np.ndarray:
    if not isinstance(seq, np.ndarray) or seq.ndim != 3 or seq.dtype != np.uint8:
        shape = getattr(seq, "shape", None)
        dtype = getattr(seq, "dtype", type(seq).__name__)
        raise SequenceError(
            f"expected (T, H, W) uint8 frames, got {dtype} {shape} (load with gaitlu.sequence.load_sequence)"
        )
    return seq


def align_frame(mask: np.ndarray) -> np.ndarray | None:
    """One raw (H, W) uint8 mask of any size -> aligned (64, 64) uint8, or None when it holds no person.

    None means: pixel sum at most EMPTY_FRAME_SUM, or a person box under MIN_PERSON_HEIGHT pixels tall,
    more than MAX_PERSON_ASPECT times wider than tall, or under one pixel wide at height 64.
    """
    return _align(mask)[0]


def _align(mask: np.ndarray) -> tuple[np.ndarray | None, str]:
    """align_frame's result and, when it is None, why (a key of _DROPPED) and the box size."""
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        raise SequenceError(f"align_frame takes one (H, W) mask, got shape {getattr(mask, 'shape', None)}")
    if int(mask.sum(dtype=np.int64)) <= EMPTY_FRAME_SUM:
        return None, "empty"
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)  # the foreground's box
    box = f"{height}x{width} px"
    if height < MIN_PERSON_HEIGHT:
        return None, f"short:{box}"
    if width > MAX_PERSON_ASPECT * height:
        return None, f"flat:{box}"
    new_width = round(width * FRAME_HEIGHT / height)  # keep the aspect ratio at height 64
    if new_width < 1:
        return None, f"thin:{box}"
    person = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # (height, width)
    resized = cv2.resize(person, (new_width, FRAME_HEIGHT), interpolation=cv2.INTER_CUBIC)  # (64, new_width)
    column_mass = resized.sum(axis=0, dtype=np.int64).cumsum()
    if column_mass[-1] == 0:
        return None, "empty"
    # First column whose cumulative mass passes half of the total: the person's horizontal centre.
    centre = int(np.searchsorted(column_mass, column_mass[-1] / 2, side="right"))
    padded = np.zeros((FRAME_HEIGHT, new_width + ALIGNED_WIDTH), np.uint8)  # 32 zero columns each side
    padded[:, _HALF : _HALF + new_width] = resized
    return padded[:, centre : centre + ALIGNED_WIDTH], ""  # (64, 64); resized column `centre` lands at 32


def align_sequence(raw: np.ndarray) -> np.ndarray:
    """Raw (T, H, W) uint8 masks -> aligned (T', 64, 64) uint8, dropping frames without a person.

    Raises SequenceError when no frame is usable, saying why the frames were dropped.
    """
    raw = _check_frames(raw)
    aligned, dropped = [], Counter[str]()
    example: dict[str, str] = {}
    for frame in raw:
        result, why = _align(frame)
        if result is None:
            reason, _, box = why.partition(":")
            dropped[reason] += 1
            example.setdefault(reason, box)
        else:
            aligned.append(result)
    if not aligned:
        reasons = "; ".join(
            f"{n} {_DROPPED[reason]}" + (f" (e.g. {example[reason]})" if example[reason] else "")
            for reason, n in dropped.most_common()
        )
        raise SequenceError(f"none of the {len(raw)} frames holds a usable silhouette: {reasons}")
    if dropped:
        logger.debug(
            "dropped %d of %d frames without a usable silhouette: %s", dropped.total(), len(raw), dropped
        )
    return np.stack(aligned)  # T' x (64, 64) -> (T', 64, 64)


def to_model_frames(seq: np.ndarray) -> np.ndarray:
    """Any (T, H, W) uint8 sequence -> the model's (T', 64, 44) uint8 input; the one entry point for all.

    Decided by frame size, nothing else:
    - 64x44: already model input (GaitLU-1M `silhouette_cut_pkl`), returned unchanged;
    - 64x64: already OpenGait-aligned (CASIA-B, OU-MVLP, ... pkl files), only cut to columns 10..53;
    - any other size: raw masks, aligned (`align_sequence`, empty frames dropped) then cut.
    So a raw mask that is exactly 64x64 is taken as aligned; align such data explicitly first.
    """
    seq = _check_frames(seq)
    frame_size = seq.shape[1:]
    if frame_size == (FRAME_HEIGHT, MODEL_WIDTH):
        return seq
    aligned = seq if frame_size == (FRAME_HEIGHT, ALIGNED_WIDTH) else align_sequence(seq)
    return np.ascontiguousarray(aligned[:, :, CUT : CUT + MODEL_WIDTH])  # (T, 64, 64) -> (T, 64, 44)


def drop_empty_frames(frames: np.ndarray, min_frames: int = 1) -> np.ndarray:
    """Model frames (T, 64, 44) uint8 without the empty ones (pixel sum at most EMPTY_FRAME_SUM, as
    alignment drops raw masks); SequenceError, with the count, when fewer than `min_frames` remain.

    What the service embeds (engine/engine.py): a blank frame carries no gait, and a sequence of blank
    frames would be embedded as a person. Training and evaluation read `to_model_frames` as it is.
    """
    frames = _check_frames(frames)
    sums = frames.reshape(len(frames), -1).sum(axis=1, dtype=np.int64)  # (T,)
    kept = sums > EMPTY_FRAME_SUM
    if int(kept.sum()) < min_frames:
        raise SequenceError(
            f"the sequence has {int(kept.sum())} non-empty frames of {len(frames)}; "
            f"at least {min_frames} needed (a frame with a pixel sum <= {EMPTY_FRAME_SUM} is empty)"
        )
    return frames if kept.all() else frames[kept]


def to_float(seq: np.ndarray) -> np.ndarray:
    """uint8 frames (0..255) -> float32 in [0, 1], the network's input scale."""
    if not isinstance(seq, np.ndarray) or seq.dtype != np.uint8:
        raise SequenceError(f"to_float takes uint8 frames, got {getattr(seq, 'dtype', type(seq).__name__)}")
    scaled: np.ndarray = np.divide(seq, 255, dtype=np.float32)
    return scaled

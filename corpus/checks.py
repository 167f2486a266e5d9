"""Load one corpus file safely and say precisely what is wrong with it when it is not usable.

The indexer, the packer and the tree reader share this, so a file is judged the same way everywhere.
Statuses: `ok`, `unreadable` (I/O error), `empty` (zero bytes or zero frames), `too_short` (fewer than
the minimum frames), `malicious` (the pickle names something other than the numpy array machinery:
refused by gaitlu.safepickle before anything runs), `invalid` (corrupt pickle, wrong rank, dtype or
frame size), `duplicate` (a second file with an already seen sequence id).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gaitlu.errors import SequenceError, UnsafePickleError
from gaitlu.safepickle import loads_array
from gaitlu.sequence import SequenceLimits, validate_sequence

HEIGHT = 64
WIDTH = 44  # the GaitLU "cut" width; 64-wide frames lose CUT columns on each side
CUT = 10
DEFAULT_MIN_FRAMES = 10  # a 20-frame training window would repeat every frame more than twice below this
# Frames are checked below (64 x 44/64); the limits bound the rest before any memory is spent.
CORPUS_LIMITS = SequenceLimits(max_frames=10_000, max_frame_side=HEIGHT, max_bytes=64 * 1024 * 1024)
STATUSES = ("ok", "unreadable", "empty", "too_short", "malicious", "invalid", "duplicate")


class BadFile(Exception):
    """A corpus file that cannot be used; `status` is one of STATUSES, `reason` says why in words."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class FileInfo:
    """What the indexer records about a readable file (frame size as stored on disk)."""

    frames: int
    height: int
    width: int
    bytes: int
    disk_bytes: int


def load_checked(path: Path, min_frames: int = DEFAULT_MIN_FRAMES) -> tuple[np.ndarray, FileInfo]:
    """Read and check one `.pkl`: its (T, 64, 44) uint8 frames and the file's facts, or BadFile."""
    try:
        with open(path, "rb") as f:
            stat = os.fstat(f.fileno())
            if stat.st_size > CORPUS_LIMITS.max_bytes:
                raise BadFile(
                    "invalid", f"{stat.st_size} bytes is over the {CORPUS_LIMITS.max_bytes}-byte limit"
                )
            data = f.read()
    except OSError as exc:
        raise BadFile("unreadable", exc.strerror or str(exc)) from None
    if not data:
        raise BadFile("empty", "the file has zero bytes")
    try:
        arr = loads_array(data, max_bytes=CORPUS_LIMITS.max_bytes, name=path.name)
        if arr.ndim == 3 and arr.shape[0] == 0:
            raise BadFile("empty", "the array has no frames")
        seq = validate_sequence(arr, CORPUS_LIMITS, name=path.name)
    except UnsafePickleError as exc:
        raise BadFile("malicious", str(exc).removeprefix(f"{path.name}: ")) from None
    except SequenceError as exc:
        raise BadFile("invalid", str(exc).removeprefix(f"{path.name}: ")) from None
    frames, height, width = seq.shape
    if height != HEIGHT or width not in (WIDTH, HEIGHT):
        raise BadFile(
            "invalid", f"frames are {height}x{width}, expected {HEIGHT}x{WIDTH} or {HEIGHT}x{HEIGHT}"
        )
    if frames < min_frames:
        raise BadFile("too_short", f"{frames} frames, fewer than the minimum {min_frames}")
    info = FileInfo(frames, height, width, stat.st_size, stat.st_blocks * 512)
    return cut_width(seq), info


def cut_width(seq: np.ndarray) -> np.ndarray:
    """(T, 64, 64) -> its central (T, 64, 44), as the model input cuts; (T, 64, 44) passes through."""
    if seq.shape[2] == WIDTH:
        return seq
    return np.ascontiguousarray(seq[:, :, CUT:-CUT])  # (T, 64, 64) -> (T, 64, 44)

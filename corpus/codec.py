"""Compact encoding of one silhouette sequence for the shards: threshold, bit-pack per frame, optional zlib.

Silhouettes are (nearly) binary, so one bit per pixel loses nothing for 0/255 masks: a pixel is
foreground when its value is >= THRESHOLD and decodes to 255, else 0. Grey levels (a few edge pixels
from resizing in real GaitLU files) are rounded that way; `count_nonbinary` measures how many there were.

Two codecs, measured in benchmarks/RESULTS.md (## Data loading):
- `packbits`: the bit planes as they are, 8x smaller than uint8 pickles; decoding is one unpack
  (~12 us for 92 frames), so random reads beat reading the pickles;
- `packbits+zlib1`: zlib level 1 (stdlib) on top, another ~3x smaller, but inflating costs ~5-8x the
  unpack on this machine. For when disk or page cache is the scarce resource.
"""

from __future__ import annotations

import zlib

import numpy as np

from gaitlu.errors import DataError

THRESHOLD = 128
PACKBITS = "packbits"
PACKBITS_ZLIB = "packbits+zlib1"
CODECS = (PACKBITS, PACKBITS_ZLIB)  # names recorded in shard metadata; add a new name for any change
DEFAULT_CODEC = PACKBITS


def frame_bytes(height: int, width: int) -> int:
    """Packed bytes per frame: each frame's bits are padded to a whole byte on their own."""
    return (height * width + 7) // 8


def count_nonbinary(seq: np.ndarray) -> int:
    """Pixels that are neither 0 nor 255: what thresholding changes."""
    return int(seq.size - np.count_nonzero(seq == 0) - np.count_nonzero(seq == 255))


def check_codec(codec: str) -> str:
    if codec not in CODECS:
        raise DataError(f"unknown shard codec {codec!r} (this gaitlu reads {', '.join(CODECS)})")
    return codec


def encode(seq: np.ndarray, codec: str = DEFAULT_CODEC) -> bytes:
    """uint8 (T, H, W) -> bit planes, maybe compressed (the frame size is stored by the caller)."""
    frames = seq.shape[0]
    bits = seq.reshape(frames, -1) >= THRESHOLD  # (T, H*W) bool
    packed = np.packbits(bits, axis=1).tobytes()  # T rows of ceil(H*W/8) bytes
    return zlib.compress(packed, 1) if check_codec(codec) == PACKBITS_ZLIB else packed


def decode(payload: bytes, frames: int, height: int, width: int, codec: str = DEFAULT_CODEC) -> np.ndarray:
    """Inverse of `encode`: a new uint8 (T, H, W) array of 0/255; DataError if the payload does not fit."""
    row = frame_bytes(height, width)
    raw = payload
    if check_codec(codec) == PACKBITS_ZLIB:
        try:
            raw = zlib.decompress(payload)
        except zlib.error as exc:
            raise DataError(f"corrupt sequence payload ({exc})") from None
    if len(raw) != frames * row:
        raise DataError(
            f"sequence payload holds {len(raw)} bytes, {frames}x{height}x{width} needs {frames * row}"
        )
    packed = np.frombuffer(raw, dtype=np.uint8).reshape(frames, row)  # (T, ceil(H*W/8))
    bits = np.unpackbits(packed, axis=1, count=height * width)  # (T, H*W) of 0/1
    np.negative(bits, out=bits)  # 0/1 -> 0/255 in uint8
    return bits.reshape(frames, height, width)

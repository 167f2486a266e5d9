"""The shard file: many encoded sequences in one file, with a footer index for direct seeks.

Layout (little-endian):

    header   16 bytes   b"GLUSHARD", u32 format version, u32 zero
    records  ...        one `codec.encode` payload per sequence, back to back
    footer   ...        entry table (ENTRY_DTYPE, one row per sequence, in record order)
                        + sequence ids (utf-8, newline-separated) + metadata (utf-8 JSON object)
    trailer  32 bytes   u64 footer offset, u32 count, u32 ids bytes, u32 metadata bytes,
                        u32 crc32 of the footer, b"GLUSEND1"

A reader reads the trailer, then the footer, then seeks straight to any record; each record carries
its own crc32, so corruption is pinned to the sequences it touches. Files are written under a temp
name, fsynced, then renamed (gaitlu.files): a shard either exists complete or not at all.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from corpus import codec
from gaitlu.errors import DataError
from gaitlu.files import atomic_write, sha256_file

FORMAT_VERSION = 1
SHARD_SUFFIX = ".gls"
_MAGIC = b"GLUSHARD"
_END_MAGIC = b"GLUSEND1"
_HEADER = struct.Struct("<8sII")
_TRAILER = struct.Struct("<QIIII8s")
HEADER_SIZE = _HEADER.size
ENTRY_DTYPE = np.dtype(
    [
        ("offset", "<u8"),
        ("length", "<u4"),
        ("frames", "<u4"),
        ("height", "<u2"),
        ("width", "<u2"),
        ("crc32", "<u4"),
        ("nonbinary", "<u4"),  # grey pixels thresholded away when packing (0 for clean masks)
    ]
)


def shard_name(number: int) -> str:
    return f"shard-{number:05d}{SHARD_SUFFIX}"


@dataclass
class ShardFooter:
    """What a shard says about itself: one entry row and one id per sequence, plus metadata."""

    entries: np.ndarray  # (n,) ENTRY_DTYPE
    ids: list[str]
    meta: dict[str, Any]
    footer_offset: int


def write_shard(
    path: Path,
    items: Iterable[tuple[str, np.ndarray]],
    meta: dict[str, Any],
    codec_name: str = codec.DEFAULT_CODEC,
) -> ShardFooter:
    """Encode (id, frames) `items` into the shard at `path` atomically (gaitlu.files.atomic_write).

    Items are encoded as they come, so only one sequence is in memory at a time; `meta` is serialised
    after `items` is exhausted, so a generator may still fill it in.
    """
    with atomic_write(path) as f:
        return _write_file(f, items, meta, codec_name)


def _write_file(
    f: IO[bytes], items: Iterable[tuple[str, np.ndarray]], meta: dict[str, Any], codec_name: str
) -> ShardFooter:
    ids: list[str] = []
    rows: list[tuple[int, ...]] = []
    f.write(_HEADER.pack(_MAGIC, FORMAT_VERSION, 0))
    offset = HEADER_SIZE
    for seq_id, seq in items:
        if "\n" in seq_id:
            raise DataError(f"sequence id {seq_id!r} contains a newline")
        payload = codec.encode(seq, codec_name)
        frames, height, width = seq.shape
        crc, grey = zlib.crc32(payload), codec.count_nonbinary(seq)
        rows.append((offset, len(payload), frames, height, width, crc, grey))  # ENTRY_DTYPE order
        ids.append(seq_id)
        f.write(payload)
        offset += len(payload)
    entries = np.array(rows, dtype=ENTRY_DTYPE)
    full_meta = {
        "format_version": FORMAT_VERSION,
        "codec": codec_name,
        "threshold": codec.THRESHOLD,
        **meta,
    }
    id_bytes = "\n".join(ids).encode("utf-8")
    meta_bytes = json.dumps(full_meta, sort_keys=True).encode("utf-8")
    footer = entries.tobytes() + id_bytes + meta_bytes
    f.write(footer)
    f.write(_TRAILER.pack(offset, len(ids), len(id_bytes), len(meta_bytes), zlib.crc32(footer), _END_MAGIC))
    return ShardFooter(entries, ids, full_meta, offset)


def read_footer(fd: int, size: int, name: str = "shard") -> ShardFooter:
    """Parse and check a shard's header, trailer and footer via pread on an open file descriptor."""
    if size < HEADER_SIZE + _TRAILER.size:
        raise DataError(f"{name}: {size} bytes, too short to be a shard (truncated?)")
    magic, version, _ = _HEADER.unpack(os.pread(fd, HEADER_SIZE, 0))
    if magic != _MAGIC:
        raise DataError(f"{name}: not a gaitlu shard (bad magic)")
    if version != FORMAT_VERSION:
        raise DataError(f"{name}: shard format version {version}, this gaitlu reads {FORMAT_VERSION}")
    footer_offset, count, ids_len, meta_len, crc, end_magic = _TRAILER.unpack(
        os.pread(fd, _TRAILER.size, size - _TRAILER.size)
    )
    footer_len = count * ENTRY_DTYPE.itemsize + ids_len + meta_len
    if end_magic != _END_MAGIC or footer_offset + footer_len + _TRAILER.size != size:
        raise DataError(f"{name}: trailer does not match the file size (truncated or overwritten?)")
    footer = os.pread(fd, footer_len, footer_offset)
    if zlib.crc32(footer) != crc:
        raise DataError(f"{name}: footer checksum mismatch (corrupt index)")
    table_len = count * ENTRY_DTYPE.itemsize
    entries = np.frombuffer(footer, dtype=ENTRY_DTYPE, count=count).copy()
    ids_text = footer[table_len : table_len + ids_len].decode("utf-8")
    ids = ids_text.split("\n") if count else []
    meta = json.loads(footer[table_len + ids_len :])
    if len(ids) != count:
        raise DataError(f"{name}: footer lists {len(ids)} ids for {count} entries")
    if meta.get("codec") not in codec.CODECS:
        raise DataError(f"{name}: codec {meta.get('codec')!r}, this gaitlu reads {', '.join(codec.CODECS)}")
    return ShardFooter(entries, ids, meta, footer_offset)


def load_footer(path: Path) -> ShardFooter:
    """`read_footer` for a path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_footer(fd, os.fstat(fd).st_size, path.name)
    finally:
        os.close(fd)


def read_payload(fd: int, entry: np.void, name: str = "shard", check: bool = True) -> bytes:
    """One record's bytes by pread (no seek state: safe on a descriptor shared across forked workers)."""
    length = int(entry["length"])
    payload = os.pread(fd, length, int(entry["offset"]))
    if len(payload) != length:
        raise DataError(f"{name}: record at {int(entry['offset'])} is cut short (truncated shard)")
    if check and zlib.crc32(payload) != int(entry["crc32"]):
        raise DataError(f"{name}: record at {int(entry['offset'])} fails its crc32 (corrupt shard)")
    return payload


def decode_entry(payload: bytes, entry: np.void, codec_name: str) -> np.ndarray:
    return codec.decode(payload, int(entry["frames"]), int(entry["height"]), int(entry["width"]), codec_name)


@dataclass
class ShardStats:
    """Per-shard numbers that the top-level index and the pack report aggregate."""

    name: str
    count: int
    bytes: int
    sha256: str
    frames: int
    nonbinary_pixels: int
    nonbinary_sequences: int
    first_id: str | None
    last_id: str | None
    source_bytes: int
    source_disk_bytes: int
    skipped: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def from_footer(cls, path: Path, footer: ShardFooter) -> ShardStats:
        entries, meta = footer.entries, footer.meta
        return cls(
            name=path.name,
            count=len(entries),
            bytes=path.stat().st_size,
            sha256=sha256_file(path),
            frames=int(entries["frames"].sum()),
            nonbinary_pixels=int(entries["nonbinary"].sum()),
            nonbinary_sequences=int(np.count_nonzero(entries["nonbinary"])),
            first_id=footer.ids[0] if footer.ids else None,
            last_id=footer.ids[-1] if footer.ids else None,
            source_bytes=int(meta.get("source_bytes", 0)),
            source_disk_bytes=int(meta.get("source_disk_bytes", 0)),
            skipped=list(meta.get("skipped", [])),
        )

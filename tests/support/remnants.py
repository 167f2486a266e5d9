"""Searching a data folder's bytes for what an erasure must have removed: an erased person's embeddings
and pictures must be gone from every byte on disk, not only from the answers."""

from __future__ import annotations

from pathlib import Path

WINDOW = 32  # bytes: 8 floats of an embedding, or 32 characters of a picture, occur nowhere by chance


def remnants(folder: Path, *secrets: bytes) -> list[str]:
    """Files under `folder` (as `name@offset`) holding any WINDOW-byte piece of any secret: a blob may
    be split across SQLite pages, so the pieces are searched, not the whole."""
    pieces = {s[i : i + WINDOW] for s in secrets for i in range(0, len(s) - WINDOW + 1, WINDOW)}
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path.name}@{data.find(p)}" for p in pieces if p in data]
    return found

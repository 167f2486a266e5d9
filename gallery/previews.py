"""The picture a sequence's metadata may hold for people: its GEI, under a reserved key.

The web page shows each enrolled sequence's GEI (Gait Energy Image, the mean silhouette), and each
search hit's. Galleries keep embeddings, not frames, so every enrolment (through the service or
`gaitlu enroll --offline`) stores a small picture of the sequence in its metadata under the reserved key
`GEI_KEY` (~1.5 KB of the store's 16 KB): no schema change, and it is added and removed in the same
transaction as the sequence. Responses carry it apart from the caller's metadata, as `gei_png`
(`split_gei`). The picture is drawn by whoever enrols (the faces: gaitlu/pictures.py); the galleries
only keep it, or leave it out (a gallery's `store_pictures`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gallery.errors import InvalidInputError
from gallery.validate import MAX_METADATA_BYTES

GEI_KEY = "gei_png"  # reserved metadata key: the server's; a caller may only set it to null (no picture)
Draw = Callable[[np.ndarray], str]  # (T, 64, 44) uint8 model frames -> the picture stored under GEI_KEY


def check_reserved(metadata: Sequence[dict[str, Any] | None] | None) -> None:
    """Refuse callers' metadata that sets GEI_KEY to anything but null: the picture stored there is the
    server's own drawing of the enrolled frames, which the web page shows as the person's; null (no
    picture for this sequence) is the one value a caller may give."""
    for item in metadata or []:
        if isinstance(item, dict) and item.get(GEI_KEY) is not None:
            raise InvalidInputError(
                f"metadata key {GEI_KEY!r} is reserved: the server stores the sequence's GEI picture "
                "under it (give null to store none, or use another key)"
            )


def with_gei(metadata: dict[str, Any] | None, frames: np.ndarray, draw: Draw) -> dict[str, Any] | None:
    """`metadata` plus `draw(frames)` under GEI_KEY, unless the caller set that key (to null: no
    picture) or the picture would push the metadata over the store's size limit (then it has none)."""
    if metadata is not None and GEI_KEY in metadata:
        return metadata
    extended = {**(metadata or {}), GEI_KEY: draw(frames)}
    if len(json.dumps(extended, separators=(",", ":")).encode()) > MAX_METADATA_BYTES:
        return metadata
    return extended


def split_gei(metadata: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
    """Stored metadata -> (the caller's metadata, the GEI): the reserved key is not the caller's data, so
    responses carry it in a field of its own (metadata that held only the GEI reads as null)."""
    if not metadata or GEI_KEY not in metadata:
        return metadata, None
    gei = metadata[GEI_KEY]
    rest = {key: value for key, value in metadata.items() if key != GEI_KEY}
    return rest or None, gei if isinstance(gei, str) else None


def with_geis(
    metadata: Sequence[dict[str, Any] | None] | None, frames: Sequence[np.ndarray], draw: Draw
) -> Sequence[dict[str, Any] | None] | None:
    """Per-sequence `with_gei`; a metadata list of the wrong length is returned unchanged so that the
    store reports the mismatch with its own message."""
    given = metadata if metadata is not None else [None] * len(frames)
    if len(given) != len(frames):
        return metadata
    return [with_gei(m, f, draw) for m, f in zip(given, frames, strict=True)]

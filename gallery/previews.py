"""Pictures of sequences for people: model frames and GEIs as PNG data URIs.

The web page animates an upload's frames and shows its GEI (Gait Energy Image, the mean silhouette),
and shows each search hit's GEI. Galleries keep embeddings, not frames, so every enrolment (through the
service or `gaitlu enroll --offline`) stores a small GEI of the sequence in its metadata under the
reserved key `GEI_KEY` (~1.5 KB of the store's 16 KB): no schema change, and it is added and removed in
the same transaction as the sequence. Responses carry it apart from the caller's metadata, as `gei_png`
(`split_gei`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from gaitlu.evaluation.gei import gait_energy_image
from gallery.errors import InvalidInputError
from gallery.validate import MAX_METADATA_BYTES

PNG_PREFIX = "data:image/png;base64,"
GEI_KEY = "gei_png"  # reserved metadata key: the server's; a caller may only set it to null (no picture)


@dataclass(frozen=True)
class SequencePreview:
    frames: list[str]  # one PNG data URI per model frame
    gei: str  # PNG data URI of the mean frame


def png_data_uri(image: np.ndarray) -> str:
    """(H, W) uint8 -> `data:image/png;base64,...`."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:  # cv2 only fails on unsupported arrays, which model frames never are
        raise ValueError(f"cannot encode an image of shape {image.shape} and dtype {image.dtype} as PNG")
    return PNG_PREFIX + base64.b64encode(encoded.tobytes()).decode("ascii")


def gei_png(frames: np.ndarray) -> str:
    """(T, 64, 44) uint8 model frames -> their GEI as a grey PNG data URI."""
    gei = np.round(gait_energy_image(frames) * 255).astype(np.uint8)  # (64, 44) in [0, 255]
    return png_data_uri(gei)


def sequence_preview(frames: np.ndarray) -> SequencePreview:
    """(T, 64, 44) uint8 model frames -> every frame and the GEI as PNG data URIs."""
    return SequencePreview([png_data_uri(frame) for frame in frames], gei_png(frames))


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


def with_gei(metadata: dict[str, Any] | None, frames: np.ndarray) -> dict[str, Any] | None:
    """`metadata` plus the sequence's GEI under GEI_KEY, unless the caller set that key (to null: no
    picture) or the GEI would push the metadata over the store's size limit (then it has no picture)."""
    if metadata is not None and GEI_KEY in metadata:
        return metadata
    extended = {**(metadata or {}), GEI_KEY: gei_png(frames)}
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
    metadata: Sequence[dict[str, Any] | None] | None, frames: Sequence[np.ndarray]
) -> Sequence[dict[str, Any] | None] | None:
    """Per-sequence `with_gei`; a metadata list of the wrong length is returned unchanged so that the
    store reports the mismatch with its own message."""
    given = metadata if metadata is not None else [None] * len(frames)
    if len(given) != len(frames):
        return metadata
    return [with_gei(m, f) for m, f in zip(given, frames, strict=True)]

"""Input checks shared by every store call: names, model hashes, embeddings and metadata.

Embeddings are per-part L2-normalised on the way in (idempotent for model output, which already is):
a fine-tuned head's output is not unit-norm per part, and the index's inner product / parts is only
the mean per-part cosine when every part has norm 1.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from gaitlu.embedding import EmbeddingLayout, part_norms
from gallery.errors import InvalidInputError, SequenceIdConflictError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # gallery names: URL- and file-safe
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")  # subject and sequence ids
HASH_RE = re.compile(r"[0-9a-f]{64}")  # sha256 hex of the model artifact
MAX_METADATA_BYTES = 16_384
MIN_PART_NORM = 1e-6
# Model output is unit-norm per part (components <= 1); a fine-tuned head's raw output stays far below
# this. Larger components are not an embedding, and their squares would overflow float32 norms to inf
# (a part of 2e19s would silently normalise to zeros).
MAX_COMPONENT = 1e6
RETRY_TOLERANCE = 1e-4  # per component of a per-part unit vector: far below any real difference


def gallery_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidInputError(
            f"invalid gallery name {name!r}: use 1-64 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return name


def item_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise InvalidInputError(
            f"invalid {what} {value!r}: use 1-128 characters from A-Z a-z 0-9 . _ : @ -, "
            "starting with a letter or digit"
        )
    return value


def model_hash(value: str) -> str:
    normalised = value.lower() if isinstance(value, str) else ""
    if not HASH_RE.fullmatch(normalised):
        raise InvalidInputError(
            f"invalid model hash {value!r}: expected a sha256 hex digest (64 hex characters)"
        )
    return normalised


def layout(value: Any) -> EmbeddingLayout:
    if not isinstance(value, EmbeddingLayout):
        raise InvalidInputError(f"invalid embedding layout {value!r}: expected an EmbeddingLayout")
    return value


def single_query(query: Any, layout: EmbeddingLayout) -> np.ndarray:
    """One query embedding (D,) or (P, C) -> a batch of one (1, ...) for `search_batch`."""
    if np.ndim(query) not in (1, 2) or (np.ndim(query) == 2 and np.shape(query)[0] != layout.parts):
        raise InvalidInputError(
            f"a single query must have shape ({layout.size},) or ({layout.parts}, {layout.part_dim})"
        )
    return np.asarray(query)[None]


def embeddings(values: Any, layout: EmbeddingLayout) -> np.ndarray:
    """(D,), (n, D) or (n, P, C) -> (n, D) float32 with D = P*C, finite, each part unit-norm. Checked in
    float64 (what JSON numbers are) before the cast, so a component past float32's range is refused by
    its value, never cast to infinity with a RuntimeWarning."""
    x = np.asarray(values, dtype=np.float64)
    parts, part_dim, size = layout.parts, layout.part_dim, layout.size
    if x.ndim == 1:
        x = x[None]
    if x.ndim == 3 and x.shape[1:] == (parts, part_dim):
        x = layout.flatten(x)  # (n, P, C) -> (n, P*C), part-major like the model output
    if x.ndim != 2 or x.shape[1] != size:
        raise InvalidInputError(
            f"embedding shape {np.shape(values)} does not match the gallery: expected (D,), (n, D) or "
            f"(n, {parts}, {part_dim}) with D = {size}"
        )
    if len(x) == 0:
        raise InvalidInputError("no embeddings given")
    if not np.isfinite(x).all():
        raise InvalidInputError("embeddings contain NaN or infinite values")
    largest = float(np.abs(x).max())
    if largest > MAX_COMPONENT:
        raise InvalidInputError(
            f"an embedding component is {largest:.3g}; components must lie within +-{MAX_COMPONENT:g} "
            "(this service's embeddings are unit-norm per part)"
        )
    by_part = layout.unflatten(x.astype(np.float32))  # (n, P, C); within +-MAX_COMPONENT: exact enough
    norms = part_norms(by_part.astype(np.float64))  # (n, P)
    if (norms < MIN_PART_NORM).any():
        raise InvalidInputError("an embedding has an all-zero part: it cannot be compared by cosine")
    return np.ascontiguousarray(layout.flatten(by_part / norms[..., None]), dtype=np.float32)


def metadata(value: dict[str, Any] | None) -> str | None:
    """A JSON object (or None) -> its compact JSON text, bounded in size."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInputError(f"metadata must be a JSON object or null, not {type(value).__name__}")
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata is not JSON-serialisable: {exc}") from exc
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise InvalidInputError(f"metadata is larger than {MAX_METADATA_BYTES} bytes of JSON")
    return text


def retry(gallery: str, uid: str, subject_id: str, blob: bytes, existing: tuple[str, bytes]) -> None:
    """A repeated sequence id is a retry only if subject and embedding (float32 bytes) are as stored.

    "The same" embedding allows rounding noise: a retried upload can be batched differently by the
    service, and batched kernels differ from a lone call in the last bits (~1e-7).
    """
    if existing[0] != subject_id:
        raise SequenceIdConflictError(
            f"sequence id '{uid}' already exists in gallery '{gallery}' for another subject ('{existing[0]}')"
        )
    stored, given = np.frombuffer(existing[1], np.float32), np.frombuffer(blob, np.float32)
    if stored.shape != given.shape or not np.allclose(stored, given, rtol=0, atol=RETRY_TOLERANCE):
        raise SequenceIdConflictError(
            f"sequence id '{uid}' already exists in gallery '{gallery}' with a different embedding"
        )

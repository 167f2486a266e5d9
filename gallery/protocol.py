"""The gallery contract: what the engine, the CLI and the portable format need of a gallery store.

Two stores implement it: `gallery.store.LocalStore` (`local`: SQLite + FAISS in this process, the
default) and `gallery.milvus.MilvusStore` (`milvus`: a Milvus server or cluster that API replicas share).
`tests/test_gallery_contract.py` runs one behavioural suite against both. Every method raises the domain
errors of gallery/errors.py and nothing else meant for the user.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gaitlu.embedding import EmbeddingLayout
from gaitlu.schemas import MAX_K
from gallery.filters import SequenceFilter
from gallery.records import Erasure, GalleryInfo, GalleryPolicy, GalleryStats, SequenceInfo, SubjectPage
from gallery.search import SearchHit

EXPORT_CHUNK = 1024  # sequences per chunk when a gallery is streamed out
# What every store accepts (and the HTTP layer bounds its parameters by): MAX_K subjects per search
# (gaitlu.schemas, the API's own bound), a page of subjects of 1 to MAX_PAGE from an offset up to
# MAX_OFFSET (SQLite's largest integer: beyond it the local store's binding overflows).
MAX_OFFSET = 2**63 - 1
MAX_PAGE = 10_000

__all__ = ["EXPORT_CHUNK", "MAX_K", "MAX_OFFSET", "MAX_PAGE", "SequenceRecord", "Store"]


@dataclass(frozen=True)
class SequenceRecord:
    """One stored sequence with its embedding: what a gallery export carries."""

    info: SequenceInfo
    embedding: np.ndarray  # (D,) float32, each part unit-norm


@runtime_checkable
class Store(Protocol):
    """Galleries of enrolled subjects for one model each, searchable by embedding. Thread-safe."""

    # ----- galleries
    def create_gallery(
        self,
        name: str,
        model_hash: str,
        layout: EmbeddingLayout,
        metadata: dict[str, Any] | None = None,
        policy: GalleryPolicy = GalleryPolicy(),
    ) -> GalleryInfo: ...

    def set_policy(self, name: str, policy: GalleryPolicy) -> GalleryInfo:
        """Change what a gallery keeps (a store that cannot honour a policy refuses it)."""
        ...

    def get_gallery(self, name: str) -> GalleryInfo: ...

    def list_galleries(self) -> list[GalleryInfo]: ...

    def delete_gallery(self, name: str) -> None: ...

    # ----- enrolment and removal
    def enroll(
        self,
        name: str,
        subject_id: str,
        embeddings: np.ndarray,
        model_hash: str,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        sequence_ids: Sequence[str] | None = None,
    ) -> list[SequenceInfo]:
        """All or none; a sequence id held already for this subject with this embedding is a retry."""
        ...

    def delete_subject(self, name: str, subject_id: str) -> None: ...

    def delete_sequence(self, name: str, sequence_id: str) -> None: ...

    # ----- erasure (docs/privacy.md)
    def sweep_expired(self, now: datetime) -> list[Erasure]:
        """Erase the sequences past their gallery's retention at `now`; what was erased, per gallery."""
        ...

    def erasures(self, gallery: str | None = None, since: datetime | None = None) -> list[Erasure]:
        """The erasure log, oldest first, to apply to exports made before (gallery.portable)."""
        ...

    # ----- listing
    def list_subjects(self, name: str, offset: int = 0, limit: int = 100) -> SubjectPage: ...

    def list_sequences(self, name: str, subject_id: str) -> list[SequenceInfo]: ...

    def get_sequence(self, name: str, sequence_id: str) -> SequenceInfo: ...

    def iter_records(self, name: str, chunk: int = EXPORT_CHUNK) -> Iterator[list[SequenceRecord]]:
        """Every sequence with its embedding, `chunk` at a time, in memory bounded by the chunk."""
        ...

    def get_embedding(self, name: str, sequence_id: str) -> np.ndarray:
        """A stored sequence's embedding (D,) float32, per-part normalised, as enrolled."""
        ...

    def subject_embeddings(self, name: str, subject_id: str) -> tuple[list[str], np.ndarray]:
        """A subject's sequence ids and their embeddings (n, D), in enrolment order."""
        ...

    # ----- search
    def search(
        self,
        name: str,
        query: np.ndarray,
        model_hash: str,
        k: int = 5,
        threshold: float | None = None,
        top_m: int = 1,
        sequence_filter: SequenceFilter | None = None,
    ) -> list[SearchHit]: ...

    def search_batch(
        self,
        name: str,
        queries: np.ndarray,
        model_hash: str,
        k: int = 5,
        threshold: float | None = None,
        top_m: int = 1,
        sequence_filter: SequenceFilter | None = None,
    ) -> list[list[SearchHit]]: ...

    def centre(self, model_hash: str) -> np.ndarray | None:
        """The (parts, part_dim) centre the galleries of `model_hash` are scored with, if any."""
        ...

    def check_model(self, name: str, model_hash: str) -> None:
        """Raise GalleryNotFoundError or ModelMismatchError, cheaply (before any inference is spent)."""
        ...

    # ----- health and lifecycle
    def stats(self) -> list[GalleryStats]:
        """Sizes per gallery, for metrics."""
        ...

    def check(self) -> None:
        """Raise a GalleryError if the store cannot answer now (closed, or its server unreachable)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc: object) -> None: ...

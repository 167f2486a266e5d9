"""What both gallery stores do alike: argument checks, enrolment validation and the search entry points.

`GalleryCore` implements the parts of `gallery.protocol.Store` that do not depend on where the
galleries are kept: it validates what a caller gives (names, hashes, layouts, embeddings, metadata,
sequence ids, k / top_m / threshold, paging bounds) and hands the storage adapter checked values. An
adapter (`gallery.store.LocalStore`, `gallery.milvus.MilvusStore`) supplies the gallery lookup and the
storage primitives (`_gallery`, `_create`, `_enroll`, `_search`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, Self, TypeVar

import numpy as np

from gaitlu.embedding import EmbeddingLayout
from gallery import validate
from gallery.errors import InvalidInputError, ModelMismatchError
from gallery.filters import SequenceAttributes, SequenceFilter, attributes
from gallery.protocol import MAX_K, MAX_OFFSET, MAX_PAGE
from gallery.records import GalleryInfo, GalleryPolicy, SequenceInfo
from gallery.search import SearchHit


def utc(seconds: float) -> datetime:
    """A stored time (seconds since the epoch) as the records carry it."""
    return datetime.fromtimestamp(seconds, tz=UTC)


def check_search(k: int, top_m: int, threshold: float | None) -> None:
    if not 1 <= k <= MAX_K or top_m < 1:
        raise InvalidInputError(f"k must be between 1 and {MAX_K} and top_m >= 1")
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise InvalidInputError("threshold must be between -1 and 1")


def check_page(offset: int, limit: int) -> None:
    if not 0 <= offset <= MAX_OFFSET or not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(
            f"offset must be between 0 and {MAX_OFFSET} and limit between 1 and {MAX_PAGE}"
        )


@dataclass(frozen=True)
class NewGallery:
    """A checked gallery to create."""

    name: str
    model_hash: str
    layout: EmbeddingLayout  # per-part-l2: as stored
    metadata: dict[str, Any] | None  # the creator's, as given
    metadata_json: str | None  # its compact JSON text
    policy: GalleryPolicy


@dataclass(frozen=True)
class Enrolment:
    """One checked enrolment: n sequences of one subject."""

    subject_id: str
    vectors: np.ndarray  # (n, D) float32, each part unit-norm
    metadata: list[dict[str, Any] | None]  # as given, one per sequence
    metadata_json: list[str | None]  # their compact JSON text
    attributes: list[SequenceAttributes]  # their filterable keys (gallery.filters)
    uids: list[str] | None  # the client's sequence ids, or None: the store makes them


@dataclass(frozen=True)
class Query:
    """Checked search arguments: (q, D) queries and what to return for each."""

    vectors: np.ndarray  # (q, D) float32, each part unit-norm
    k: int
    top_m: int
    threshold: float | None
    sequence_filter: SequenceFilter | None


class Described(Protocol):
    """What the core needs to know of a gallery an adapter looked up."""

    @property
    def name(self) -> str: ...

    @property
    def model_hash(self) -> str: ...

    @property
    def layout(self) -> EmbeddingLayout: ...


G = TypeVar("G", bound=Described)


class GalleryCore(ABC, Generic[G]):
    """The store-independent half of a gallery store; `G` is the adapter's gallery description."""

    # ----- lifecycle

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- galleries

    def create_gallery(
        self,
        name: str,
        model_hash: str,
        layout: EmbeddingLayout,
        metadata: dict[str, Any] | None = None,
        policy: GalleryPolicy = GalleryPolicy(),
    ) -> GalleryInfo:
        """An empty gallery for embeddings of one model and layout. Whatever the model's normalisation, the
        gallery stores every part unit-norm (gallery.validate), so its layout says "per-part-l2"."""
        self._check_policy(policy)
        name = validate.gallery_name(name)
        model_hash = validate.model_hash(model_hash)
        given = validate.layout(layout)
        layout = EmbeddingLayout(given.parts, given.part_dim)  # per-part-l2: as stored
        self._create(NewGallery(name, model_hash, layout, metadata, validate.metadata(metadata), policy))
        return self.get_gallery(name)

    @abstractmethod
    def get_gallery(self, name: str) -> GalleryInfo: ...

    def _check_policy(self, policy: GalleryPolicy) -> None:
        """Refuse a policy the store cannot honour (every one is honoured unless overridden)."""

    @abstractmethod
    def _create(self, new: NewGallery) -> None:
        """Store a new, empty gallery; GalleryExistsError if the name is taken."""

    # ----- enrolment

    def enroll(
        self,
        name: str,
        subject_id: str,
        embeddings: np.ndarray,
        model_hash: str,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        sequence_ids: Sequence[str] | None = None,
    ) -> list[SequenceInfo]:
        """Enrol n sequences of one subject, all or none; returns them in input order. Embeddings are
        per-part normalised. A given sequence id that already exists for this subject with the same
        embedding is an idempotent retry: the stored sequence is returned and nothing is added."""
        subject_id = validate.item_id(subject_id, "subject id")
        gallery = self._checked(name, model_hash)
        vectors = validate.embeddings(embeddings, gallery.layout)  # (n, D)
        n = len(vectors)
        given: list[dict[str, Any] | None] = list(metadata) if metadata is not None else [None] * n
        metadata_json = [validate.metadata(m) for m in given]
        found = [attributes(m) for m in given]  # the filterable keys must be well-formed
        uids = (
            [validate.item_id(u, "sequence id") for u in sequence_ids] if sequence_ids is not None else None
        )
        if len(metadata_json) != n or (uids is not None and len(uids) != n):
            raise InvalidInputError(
                f"got {n} embeddings but a different number of metadata entries or sequence ids"
            )
        if uids is not None and len(set(uids)) != n:
            raise InvalidInputError("sequence ids repeat within one enrolment")
        return self._enroll(gallery, Enrolment(subject_id, vectors, given, metadata_json, found, uids))

    @abstractmethod
    def _enroll(self, gallery: G, enrolment: Enrolment) -> list[SequenceInfo]:
        """Store a checked enrolment into `gallery` (looked up before the checks)."""

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
    ) -> list[SearchHit]:
        """One query embedding (D,) or (parts, C) -> up to k subjects, best first."""
        queries = validate.single_query(query, self._checked(name, model_hash).layout)
        return self.search_batch(name, queries, model_hash, k, threshold, top_m, sequence_filter)[0]

    def search_batch(
        self,
        name: str,
        queries: np.ndarray,
        model_hash: str,
        k: int = 5,
        threshold: float | None = None,
        top_m: int = 1,
        sequence_filter: SequenceFilter | None = None,
    ) -> list[list[SearchHit]]:
        """(q, D) or (q, parts, C) queries -> for each, up to k subjects, best first.

        A subject scores the mean of its best `top_m` sequence scores (1: its best sequence); scores are
        mean per-part cosines in [-1, 1] (estimates on an approximate index); `threshold` drops lower ones.
        `sequence_filter` keeps only the sequences it matches, inside the index search: subjects score,
        and count their sequences, among those only.
        """
        check_search(k, top_m, threshold)
        gallery = self._checked(name, model_hash)
        vectors = validate.embeddings(queries, gallery.layout)  # (q, D)
        return self._search(gallery, Query(vectors, k, top_m, threshold, sequence_filter))

    @abstractmethod
    def _search(self, gallery: G, query: Query) -> list[list[SearchHit]]:
        """Checked queries -> for each, up to k subjects (gallery.search's aggregation)."""

    def check_model(self, name: str, model_hash: str) -> None:
        """GalleryNotFoundError or ModelMismatchError, cheaply (before any inference is spent)."""
        self._checked(name, model_hash)

    # ----- lookup

    @abstractmethod
    def _gallery(self, name: str) -> G:
        """The gallery named `name`, or GalleryNotFoundError (StoreClosedError once closed)."""

    def _checked(self, name: str, model_hash: str) -> G:
        gallery = self._gallery(name)
        given = validate.model_hash(model_hash)
        if given != gallery.model_hash:
            raise ModelMismatchError(name, gallery.model_hash, given)
        return gallery

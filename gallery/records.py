"""What the store returns: plain frozen dataclasses the service turns into response models."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from gaitlu.embedding import EmbeddingLayout
from gaitlu.schemas import MAX_RETENTION_DAYS, ErasureAction
from gallery.errors import InvalidInputError


@dataclass(frozen=True)
class GalleryPolicy:
    """What a gallery keeps and for how long (docs/privacy.md): sequences older than `retention_days` are
    erased by the retention sweep (None: kept until deleted); without `store_pictures` no GEI picture is
    kept in a sequence's metadata."""

    retention_days: int | None = None
    store_pictures: bool = True

    def __post_init__(self) -> None:
        days = self.retention_days
        whole = isinstance(days, int) and not isinstance(days, bool)
        if days is not None and (not whole or not 1 <= days <= MAX_RETENTION_DAYS):
            raise InvalidInputError(
                f"retention_days must be a whole number of days from 1 to {MAX_RETENTION_DAYS}, or null "
                f"(keep), not {days!r}"
            )


@dataclass(frozen=True)
class GalleryInfo:
    name: str
    model_hash: str
    layout: EmbeddingLayout  # of the stored embeddings: always per-part-normalised (gallery.validate)
    metadata: dict[str, Any] | None
    created: datetime
    subject_count: int
    sequence_count: int
    policy: GalleryPolicy = GalleryPolicy()


@dataclass(frozen=True)
class Erasure:
    """One entry of a store's erasure log: which sequences of a gallery were erased, when and why
    (`expire`: the retention sweep). A gallery's deletion lists no ids: it erased every sequence created
    before `time`. Old exports are brought in step with these (gallery.portable.erase_export)."""

    gallery: str
    action: ErasureAction
    time: datetime
    subject_id: str | None = None
    sequence_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubjectInfo:
    subject_id: str
    sequence_count: int
    created: datetime


@dataclass(frozen=True)
class SubjectPage:
    """One page of a gallery's subjects, ordered by subject id; `count` counts them all (as the API's)."""

    data: list[SubjectInfo]
    count: int
    offset: int
    limit: int


@dataclass(frozen=True)
class SequenceInfo:
    sequence_id: str
    gallery: str
    subject_id: str
    model_hash: str
    metadata: dict[str, Any] | None
    created: datetime


@dataclass(frozen=True)
class GalleryStats:
    """Figures for metrics: from memory in the local store, a few count queries on a Milvus server."""

    name: str
    subjects: int
    sequences: int
    index_kind: Literal["exact", "approximate"]
    index_source: Literal["built", "snapshot", "server"]  # server: held by a Milvus server, not here
    index_bytes: int  # estimate of the index's memory in this process (0 for "server")

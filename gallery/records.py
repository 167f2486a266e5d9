"""What the store returns: plain frozen dataclasses the service turns into response models."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from gaitlu.embedding import EmbeddingLayout


@dataclass(frozen=True)
class GalleryInfo:
    name: str
    model_hash: str
    layout: EmbeddingLayout  # of the stored embeddings: always per-part-normalised (gallery.validate)
    metadata: dict[str, Any] | None
    created: datetime
    subject_count: int
    sequence_count: int


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

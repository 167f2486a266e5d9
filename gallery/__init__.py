"""Galleries of enrolled subjects: SQLite as the source of truth, a FAISS index per gallery (torch-free).

`GalleryStore` is imported on first use, so the records and the error types work without faiss.
"""

from typing import Any

from gallery.errors import (
    ConflictError,
    GalleryError,
    GalleryExistsError,
    GalleryNotFoundError,
    InvalidInputError,
    ModelMismatchError,
    NotFoundError,
    SequenceIdConflictError,
    SequenceNotFoundError,
    StoreClosedError,
    StoreLockedError,
    StoreUnavailableError,
    SubjectNotFoundError,
)
from gallery.records import (
    Erasure,
    GalleryInfo,
    GalleryPolicy,
    GalleryStats,
    SequenceInfo,
    SubjectInfo,
    SubjectPage,
)
from gallery.search import SearchHit
from gallery.settings import IndexSettings


def __getattr__(name: str) -> Any:
    if name == "GalleryStore":
        from gallery.store import GalleryStore

        return GalleryStore
    raise AttributeError(f"module 'gallery' has no attribute {name!r}")


__all__ = [
    "ConflictError",
    "Erasure",
    "GalleryError",
    "GalleryExistsError",
    "GalleryInfo",
    "GalleryNotFoundError",
    "GalleryPolicy",
    "GalleryStats",
    "GalleryStore",
    "IndexSettings",
    "InvalidInputError",
    "ModelMismatchError",
    "NotFoundError",
    "SearchHit",
    "SequenceIdConflictError",
    "SequenceInfo",
    "SequenceNotFoundError",
    "StoreClosedError",
    "StoreLockedError",
    "StoreUnavailableError",
    "SubjectInfo",
    "SubjectNotFoundError",
    "SubjectPage",
]

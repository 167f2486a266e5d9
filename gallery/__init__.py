"""Galleries of enrolled subjects: SQLite as the source of truth, a FAISS index per gallery (torch-free).

`LocalStore` (the local store; `GalleryStore` is its older name, still importable) is imported on first use,
so the records and the error types work without faiss.
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
    if name in ("LocalStore", "GalleryStore"):
        from gallery.store import LocalStore

        return LocalStore
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
    "LocalStore",
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

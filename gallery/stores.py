"""Which gallery store to open, and its settings: `local` (SQLite + FAISS, the default) or `milvus`.

pymilvus is imported only when the milvus store is opened (it is the optional `[milvus]` extra), so a
local deployment never loads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np

from gallery.errors import EncryptionKeyError, InvalidInputError
from gallery.protocol import Store
from gallery.settings import IndexSettings, MilvusIndexSettings, MilvusIndexType, MilvusSettings

StoreKind = Literal["local", "milvus"]  # GAITLU_GALLERY_BACKEND's values
STORE_FILE = "galleries.db"  # the local store inside a data dir


def open_gallery_store(
    kind: StoreKind,
    *,
    store_path: Path | None = None,
    index: IndexSettings | None = None,
    milvus: MilvusSettings | None = None,
    centres: Mapping[str, np.ndarray] | None = None,
    max_bytes: int | None = None,
    encryption_key: bytes | None = None,
) -> Store:
    """The galleries to serve: the local store at `store_path`, or those on the Milvus server.

    `centres` (model hash -> (parts, part_dim) centre: a calibrated model's centring) only the local
    store applies: its index is a cache rebuilt from the vectors as enrolled, while a Milvus server
    indexes what it is given, so a centred model there would need its galleries re-enrolled whenever the
    centre changed. Refused rather than served with scores its calibration does not describe.
    `max_bytes` bounds the local database's size (a Milvus server's storage is its own). `encryption_key`
    (gallery/crypto.py) only the local store takes: Milvus must read the vectors it searches."""
    if kind == "milvus":
        if encryption_key is not None:
            raise EncryptionKeyError(
                "the milvus gallery store cannot encrypt at rest (the server searches the vectors): unset "
                "GAITLU_ENCRYPTION_KEY / GAITLU_ENCRYPTION_KEY_FILE, use Milvus's own storage encryption, or "
                "use the local store (docs/privacy.md)"
            )
        if milvus is None:
            raise InvalidInputError("the milvus gallery store needs a Milvus URI (GAITLU_MILVUS_URI)")
        if centres:
            raise InvalidInputError(
                "the milvus gallery store does not apply a model's calibrated centring: serve an artifact "
                "calibrated with `gaitlu calibrate --centring off` (or use the local store)"
            )
        from gallery.milvus import MilvusStore

        return MilvusStore(milvus)
    if store_path is None:
        raise InvalidInputError("the local gallery store needs the path of its database")
    from gallery.store import LocalStore

    return LocalStore(
        store_path, index_settings=index, centres=centres, max_bytes=max_bytes, encryption_key=encryption_key
    )


__all__ = [
    "STORE_FILE",
    "MilvusIndexSettings",
    "MilvusIndexType",
    "MilvusSettings",
    "StoreKind",
    "open_gallery_store",
]

"""Which gallery backend to open, and its settings: `local` (SQLite + FAISS, the default) or `milvus`.

pymilvus is imported only when the milvus backend is opened (it is the optional `[milvus]` extra), so a
local deployment never loads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from gallery.errors import EncryptionKeyError, InvalidInputError
from gallery.protocol import GalleryBackend
from gallery.settings import IndexSettings

Backend = Literal["local", "milvus"]
STORE_FILE = "galleries.db"  # the local store inside a data dir
# Milvus index types a gallery collection may be built with. milvus-lite builds FLAT, IVF_FLAT, IVF_SQ8
# and HNSW; the others need a Milvus server (GPU_* a GPU query node).
MilvusIndexType = Literal[
    "FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW", "DISKANN", "AUTOINDEX", "GPU_CAGRA", "GPU_IVF_PQ"
]
Param = int | float | str


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MilvusIndexSettings:
    """The vector index of each new gallery collection (fixed at creation) and how it is searched.

    FLAT is exact: the default, and right up to a few million sequences per query node. Larger galleries
    take IVF_SQ8 / IVF_PQ or DISKANN (docs/gallery.md sizes them); `params` and `search_params` pass
    through to Milvus (e.g. {"nlist": 4096} and {"nprobe": 64}), which validates them.
    """

    type: MilvusIndexType = "FLAT"
    params: dict[str, Param] = Field(default_factory=dict)
    search_params: dict[str, Param] = Field(default_factory=dict)


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MilvusSettings:
    """Where the galleries live: a Milvus cluster URL, a milvus-lite server address, or a local
    milvus-lite file (one process only), with an optional token, in one Milvus database."""

    uri: str
    token: str | None = None
    db_name: Annotated[str, Field(pattern=r"[A-Za-z_][A-Za-z0-9_]{0,254}")] = "default"
    index: MilvusIndexSettings = Field(default_factory=MilvusIndexSettings)
    # per call; a server that does not answer is a 503, not a hang
    timeout_s: Annotated[float, Field(gt=0)] = 10.0


def open_backend(
    backend: Backend,
    *,
    store_path: Path | None = None,
    index: IndexSettings | None = None,
    milvus: MilvusSettings | None = None,
    centres: Mapping[str, np.ndarray] | None = None,
    max_bytes: int | None = None,
    encryption_key: bytes | None = None,
) -> GalleryBackend:
    """The galleries to serve: the local store at `store_path`, or those on the Milvus server.

    `centres` (model hash -> (parts, channels) centre: a calibrated model's centring) only the local
    store applies: its index is a cache rebuilt from the vectors as enrolled, while a Milvus server
    indexes what it is given, so a centred model there would need its galleries re-enrolled whenever the
    centre changed. Refused rather than served with scores its calibration does not describe.
    `max_bytes` bounds the local database's size (a Milvus server's storage is its own). `encryption_key`
    (gallery/crypto.py) only the local store takes: Milvus must read the vectors it searches."""
    if backend == "milvus":
        if encryption_key is not None:
            raise EncryptionKeyError(
                "the milvus gallery backend cannot encrypt at rest (the server searches the vectors): unset "
                "GAITLU_ENCRYPTION_KEY / GAITLU_ENCRYPTION_KEY_FILE, use Milvus's own storage encryption, or "
                "use the local backend (docs/privacy.md)"
            )
        if milvus is None:
            raise InvalidInputError("the milvus gallery backend needs a Milvus URI (GAITLU_MILVUS_URI)")
        if centres:
            raise InvalidInputError(
                "the milvus gallery backend does not apply a model's calibrated centring: serve an artifact "
                "calibrated with `gaitlu calibrate --centring off` (or use the local backend)"
            )
        from gallery.milvus import MilvusStore

        return MilvusStore(milvus)
    if store_path is None:
        raise InvalidInputError("the local gallery backend needs the path of its database")
    from gallery.store import GalleryStore

    return GalleryStore(
        store_path, index_settings=index, centres=centres, max_bytes=max_bytes, encryption_key=encryption_key
    )

"""A gallery store of either kind for the contract tests: `local` in a temporary folder, `milvus` in a
fresh database on the session's milvus-lite server (the `milvus_uri` fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gallery.protocol import Store
from gallery.settings import IndexSettings
from gallery.stores import MilvusSettings, StoreKind, open_gallery_store
from tests.support.milvus import unique_db

STORE_KINDS: tuple[StoreKind, ...] = ("local", "milvus")


def open_store(
    kind: StoreKind, folder: Path, request: pytest.FixtureRequest, index: IndexSettings | None = None
) -> Store:
    milvus = None
    if kind == "milvus":
        milvus = MilvusSettings(uri=request.getfixturevalue("milvus_uri"), db_name=unique_db())
    return open_gallery_store(kind, store_path=folder / "gallery.db", index=index, milvus=milvus)

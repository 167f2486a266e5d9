"""A gallery store of either backend for the contract tests: `local` in a temporary folder, `milvus` in a
fresh database on the session's milvus-lite server (the `milvus_uri` fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gallery.backends import Backend, MilvusSettings, open_backend
from gallery.protocol import Store
from gallery.settings import IndexSettings
from tests.support.milvus import unique_db

BACKENDS: tuple[Backend, ...] = ("local", "milvus")


def open_store(
    backend: Backend, folder: Path, request: pytest.FixtureRequest, index: IndexSettings | None = None
) -> Store:
    milvus = None
    if backend == "milvus":
        milvus = MilvusSettings(uri=request.getfixturevalue("milvus_uri"), db_name=unique_db())
    return open_backend(backend, store_path=folder / "gallery.db", index=index, milvus=milvus)

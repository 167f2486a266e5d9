"""Erasure that erases, retention and minimisation in the gallery store: a deleted or expired person must be
gone, not only unindexed. After a deletion or a retention sweep no byte of the erased embeddings or pictures
is left anywhere in the data folder (database, WAL, index snapshots); every erasure is logged, and the log
brings exports made before it in step. The same through HTTP and the CLI is in
tests/test_service_privacy.py."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from gaitlu.embedding import EmbeddingLayout
from gallery import Erasure, GalleryPolicy, InvalidInputError, LocalStore
from gallery.portable import erase_export, export_gallery
from gallery.previews import GEI_KEY
from gallery.schema import BUSY_TIMEOUT_MS
from gallery.stores import MilvusSettings, open_gallery_store
from tests.support.embeddings import unit_embeddings
from tests.support.milvus import unique_db
from tests.support.remnants import remnants

MODEL = hashlib.sha256(b"model-a").hexdigest()
LAYOUT = EmbeddingLayout(parts=4, part_dim=64)  # 1 KB per embedding: its bytes span SQLite cells


def picture(subject: str, i: int) -> str:
    """A stand-in GEI data URI, unique per sequence (the store treats it as any metadata value)."""
    return "data:image/png;base64," + hashlib.sha256(f"{subject}-{i}".encode()).hexdigest() * 2


def enrol_people(
    store: LocalStore, gallery: str, people: int = 6, each: int = 3, first: int = 0
) -> dict[str, np.ndarray]:
    """Subjects p{first}, p{first + 1}, ... with `each` sequences `p{n}-{i}` and a picture each."""
    rng = np.random.default_rng(first)
    vectors = {}
    for n in range(first, first + people):
        subject = f"p{n}"
        vectors[subject] = unit_embeddings(rng, each, LAYOUT)
        metadata = [{"camera": "c1", GEI_KEY: picture(subject, i)} for i in range(each)]
        ids = [f"{subject}-{i}" for i in range(each)]
        store.enroll(gallery, subject, vectors[subject], MODEL, metadata, ids)
    return vectors


def secrets_of(vectors: np.ndarray, subject: str) -> list[bytes]:
    return [v.astype("<f4").tobytes() for v in vectors] + [
        picture(subject, i).encode() for i in range(len(vectors))
    ]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def stored(folder: Path) -> Iterator[tuple[LocalStore, dict[str, np.ndarray]]]:
    """A gallery of six people whose index snapshot is on disk (written at close, read at reopen)."""
    with LocalStore(folder / "galleries.db") as store:
        store.create_gallery("g", MODEL, LAYOUT)
        vectors = enrol_people(store, "g")
    assert list((folder / "galleries.db.indexes").iterdir()), "the snapshot the erasure must reach"
    with LocalStore(folder / "galleries.db") as store:
        assert remnants(folder, *secrets_of(vectors["p2"], "p2")), "the search must see what is there"
        yield store, vectors


def test_deleting_a_subject_leaves_none_of_its_bytes(stored, folder):
    store, vectors = stored
    store.delete_subject("g", "p2")
    assert remnants(folder, *secrets_of(vectors["p2"], "p2")) == []
    assert store.search("g", vectors["p3"][0], MODEL, k=1)[0].subject_id == "p3"  # the rest still works
    store.close()  # the fresh snapshot written at close holds only the others
    assert remnants(folder, *secrets_of(vectors["p2"], "p2")) == []
    assert remnants(folder, *secrets_of(vectors["p3"], "p3"))


def test_deleting_a_sequence_leaves_none_of_its_bytes(stored, folder):
    store, vectors = stored
    store.delete_sequence("g", "p4-1")
    gone, kept = secrets_of(vectors["p4"], "p4"), secrets_of(vectors["p4"][[0, 2]], "p4")
    assert remnants(folder, gone[1], gone[4]) == []  # its embedding and its picture
    assert remnants(folder, kept[0])
    store.close()
    assert remnants(folder, gone[1], gone[4]) == []


def test_deleting_a_gallery_leaves_none_of_its_bytes(stored, folder):
    store, vectors = stored
    store.delete_gallery("g")
    everyone = [s for subject, v in vectors.items() for s in secrets_of(v, subject)]
    assert remnants(folder, *everyone) == []
    assert [(e.gallery, e.action, e.sequence_ids) for e in store.erasures()] == [("g", "delete_gallery", ())]


def test_a_long_read_delays_the_wal_truncation_never_the_erasure(stored, folder):
    store, vectors = stored
    reading = store.iter_records("g", chunk=1)
    next(reading)  # an export's read transaction, open on its own connection: it holds the WAL
    started = time.monotonic()
    store.delete_subject("g", "p2")
    # Not the 30 s busy timeout: the erasure did not wait for the reader (which is still open), however
    # slow a loaded machine makes the deletion itself.
    assert time.monotonic() - started < BUSY_TIMEOUT_MS / 1000 / 2
    assert remnants(folder, *secrets_of(vectors["p2"], "p2"))  # the database file still has them...
    reading.close()
    store.delete_sequence("g", "p3-0")  # ...until the next write's checkpoint
    assert remnants(folder, *secrets_of(vectors["p2"], "p2")) == []


def test_every_erasure_is_logged_with_the_sequences_it_erased(stored):
    store, _ = stored
    before = datetime.now(UTC)
    store.delete_sequence("g", "p0-1")
    store.delete_subject("g", "p1")
    log = store.erasures("g")
    assert [(e.action, e.subject_id, e.sequence_ids) for e in log] == [
        ("delete_sequence", "p0", ("p0-1",)),
        ("delete_subject", "p1", ("p1-0", "p1-1", "p1-2")),
    ]
    assert all(before <= e.time <= datetime.now(UTC) for e in log)
    assert store.erasures("g", since=datetime.now(UTC) + timedelta(seconds=1)) == []
    assert store.erasures("other") == []


def test_the_sweep_erases_what_is_past_retention_at_the_time_it_is_given(folder, monkeypatch):
    monkeypatch.setattr("gallery.store.SWEEP_BATCH", 4)  # 6 expired sequences: two transactions
    with LocalStore(folder / "galleries.db") as store:
        store.create_gallery("short", MODEL, LAYOUT, policy=GalleryPolicy(retention_days=30))
        store.create_gallery("kept", MODEL, LAYOUT)
        vectors = enrol_people(store, "short", people=2)
        enrol_people(store, "kept", people=2, first=2)
        now = datetime.now(UTC)
        assert store.sweep_expired(now + timedelta(days=29)) == []
        erased = store.sweep_expired(now + timedelta(days=31))
        assert [(e.gallery, e.action, e.subject_id, len(e.sequence_ids)) for e in erased] == [
            ("short", "expire", None, 4),
            ("short", "expire", None, 2),
        ]
        ids = sorted(i for e in erased for i in e.sequence_ids)
        assert ids == ["p0-0", "p0-1", "p0-2", "p1-0", "p1-1", "p1-2"]
        assert store.get_gallery("short").subject_count == 0  # subjects without sequences go too
        assert store.get_gallery("kept").sequence_count == 6  # no retention: kept for ever
        assert store.sweep_expired(now + timedelta(days=400)) == []
        assert store.erasures("short") == erased
        secrets = [s for subject, v in vectors.items() for s in secrets_of(v, subject)]
        assert remnants(folder, *secrets) == []


def test_a_gallery_without_pictures_keeps_none(folder):
    with LocalStore(folder / "galleries.db") as store:
        store.create_gallery("g", MODEL, LAYOUT, policy=GalleryPolicy(store_pictures=False))
        store.create_gallery("h", MODEL, LAYOUT)
        enrol_people(store, "g", people=1)
        vectors = enrol_people(store, "h", people=1, first=1)
        assert store.get_sequence("g", "p0-0").metadata == {"camera": "c1"}
        assert remnants(folder, picture("p0", 0).encode()) == []
        assert remnants(folder, picture("p1", 0).encode()) != []  # gallery h keeps its pictures...
        info = store.set_policy("h", GalleryPolicy(store_pictures=False))
        assert info.policy == GalleryPolicy(store_pictures=False)
        assert store.get_sequence("h", "p1-0").metadata == {"camera": "c1"}
        assert remnants(folder, *[picture("p1", i).encode() for i in range(3)]) == []  # ...until now
        assert store.search("h", vectors["p1"][0], MODEL, k=1)[0].subject_id == "p1"
    with LocalStore(folder / "galleries.db") as store:  # the policy is stored
        assert store.get_gallery("h").policy == GalleryPolicy(store_pictures=False)


@pytest.mark.parametrize("days", [0, -1, 36_501, True, 1.5])
def test_retention_must_be_whole_days_in_range(days):
    with pytest.raises(InvalidInputError, match="retention_days"):
        GalleryPolicy(retention_days=days)


def test_old_exports_are_brought_in_step_with_later_erasures(stored, tmp_path):
    store, vectors = stored
    export = tmp_path / "g.tar"
    export_gallery(store, "g", export)
    store.delete_subject("g", "p1")
    store.delete_sequence("g", "p2-0")
    # p3-0 is erased and then enrolled again under the same id: the newer one stays in later exports
    store.delete_sequence("g", "p3-0")
    store.enroll("g", "p3", vectors["p3"][:1], MODEL, sequence_ids=["p3-0"])
    later = tmp_path / "later.tar"
    export_gallery(store, "g", later)

    written, removed = erase_export(export, export, erasures=store.erasures("g"))
    assert (written.sequences, removed) == (18 - 5, 5)
    assert remnants(tmp_path, *secrets_of(vectors["p1"], "p1"), secrets_of(vectors["p2"], "p2")[0]) == []
    _, removed = erase_export(later, later, erasures=store.erasures("g"))
    assert removed == 0  # everything it holds was enrolled after the erasures

    out = tmp_path / "fewer.tar"
    written, removed = erase_export(export, out, subjects={"p4"}, sequences={"p5-2", "nobody"})
    assert (written.sequences, removed) == (13 - 4, 4)
    foreign = [Erasure("another", "delete_gallery", datetime.now(UTC))]
    assert erase_export(out, out, erasures=foreign)[1] == 0  # another gallery's log changes nothing
    gone = [Erasure("g", "delete_gallery", datetime.now(UTC))]
    written, removed = erase_export(out, out, erasures=gone)
    assert (written.sequences, removed) == (0, 9)


def test_the_milvus_backend_refuses_what_it_cannot_honour(milvus_uri):
    with open_gallery_store("milvus", milvus=MilvusSettings(uri=milvus_uri, db_name=unique_db())) as store:
        for policy in (GalleryPolicy(retention_days=30), GalleryPolicy(store_pictures=False)):
            with pytest.raises(InvalidInputError, match="local store"):
                store.create_gallery("g", MODEL, LAYOUT, policy=policy)
        store.create_gallery("g", MODEL, LAYOUT)
        with pytest.raises(InvalidInputError, match="local store"):
            store.set_policy("g", GalleryPolicy(retention_days=1))
        with pytest.raises(InvalidInputError, match="erasure log"):
            store.erasures()
        assert store.sweep_expired(datetime.now(UTC) + timedelta(days=10_000)) == []
        rng = np.random.default_rng(0)
        store.enroll("g", "a", unit_embeddings(rng, 2, LAYOUT), MODEL)
        store.delete_subject("g", "a")  # delete, flush and compact
        assert store.get_gallery("g").sequence_count == 0

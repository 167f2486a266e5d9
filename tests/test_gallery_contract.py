"""The gallery contract under load and across processes' views, for both stores; then what only the
Milvus store does (filters pushed into the search, several stores on one server, collection names).

tests/test_gallery_store.py holds the single-client semantics, run against both stores too.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from gaitlu.embedding import EmbeddingLayout
from gallery import (
    GalleryExistsError,
    InvalidInputError,
    ModelMismatchError,
    NotFoundError,
    SequenceIdConflictError,
    StoreUnavailableError,
)
from gallery.filters import SequenceFilter, attributes
from gallery.milvus import SEQUENCES, SUBJECTS, MilvusStore, collection, filter_expression, gallery_of
from gallery.stores import MilvusSettings, open_gallery_store
from service.errors import answer
from tests.support.embeddings import clustered_embeddings, unit_embeddings
from tests.support.galleries import STORE_KINDS, open_store
from tests.support.milvus import milvus_lite_server, unique_db

MODEL = hashlib.sha256(b"contract").hexdigest()
OTHER = hashlib.sha256(b"another").hexdigest()
LAYOUT = EmbeddingLayout(parts=4, part_dim=16)
CLIENTS = 32


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_32_clients_enrolling_retrying_and_deleting_leave_exact_counts(kind, tmp_path, request):
    """Each client enrols its sequences with client ids, sends every enrolment twice (a retry after a
    lost answer), deletes a share, and searches for what it enrolled; at the end the counts are exact."""
    store = open_store(kind, tmp_path, request)
    store.create_gallery("g", MODEL, LAYOUT)
    rounds, failures = 4, []

    def client(worker: int) -> tuple[set[str], set[str]]:
        rng = np.random.default_rng(worker)
        kept, subjects = set(), set()
        for step in range(rounds):
            subject = f"c{worker}-s{step % 2}"
            ids = [f"c{worker}-q{step}-{i}" for i in range(2)]
            x = unit_embeddings(rng, 2, LAYOUT)
            first = store.enroll("g", subject, x, MODEL, sequence_ids=ids)
            again = store.enroll("g", subject, x, MODEL, sequence_ids=ids)  # the retry adds nothing
            if [i.sequence_id for i in again] != ids or again != first:
                failures.append(f"retry answered differently: {again} vs {first}")
            (hit,) = store.search("g", x[1], MODEL, k=1)  # found at once, under its subject
            if (hit.sequence_id, hit.subject_id) != (ids[1], subject) or hit.score < 0.999:
                failures.append(f"own sequence not found first: {hit}")
            if step == 1:
                store.delete_sequence("g", ids[0])
                kept.add(ids[1])
            else:
                kept.update(ids)
            subjects.add(subject)
        return kept, subjects

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(client, range(CLIENTS)))
    assert not failures, failures[:3]
    kept = set().union(*(k for k, _ in results))
    subjects = set().union(*(s for _, s in results))
    info = store.get_gallery("g")
    assert (
        (info.sequence_count, info.subject_count) == (len(kept), len(subjects)) == (CLIENTS * 7, CLIENTS * 2)
    )
    page = store.list_subjects("g", 0, 10_000)
    assert page.count == len(subjects) and {s.subject_id for s in page.data} == subjects
    listed = Counter(q.sequence_id for s in page.data for q in store.list_sequences("g", s.subject_id))
    assert set(listed) == kept and max(listed.values()) == 1  # nothing lost, nothing doubled
    assert sum(s.sequence_count for s in page.data) == len(kept)
    store.close()


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_conflicting_enrolment_writes_nothing(kind, tmp_path, request):
    with open_store(kind, tmp_path, request) as store:
        store.create_gallery("g", MODEL, LAYOUT)
        x = unit_embeddings(np.random.default_rng(1), 3, LAYOUT)
        store.enroll("g", "alice", x[:1], MODEL, sequence_ids=["a"])
        with pytest.raises(SequenceIdConflictError):
            store.enroll("g", "bob", x, MODEL, sequence_ids=["b1", "b2", "a"])  # "a" is alice's
        assert store.get_gallery("g").sequence_count == 1 and store.list_subjects("g").count == 1
        with pytest.raises(ModelMismatchError):
            store.enroll("g", "bob", x, OTHER)


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_export_records_stream_every_sequence_with_its_embedding(kind, tmp_path, request):
    with open_store(kind, tmp_path, request) as store:
        store.create_gallery("g", MODEL, LAYOUT)
        x = unit_embeddings(np.random.default_rng(2), 7, LAYOUT)
        for i in range(7):
            store.enroll("g", f"s{i % 3}", x[i : i + 1], MODEL, [{"i": i}], [f"q{i}"])
        chunks = list(store.iter_records("g", chunk=3))
        assert [len(c) for c in chunks] == [3, 3, 1]
        records = {r.info.sequence_id: r for c in chunks for r in c}
        for i in range(7):
            record = records[f"q{i}"]
            assert (record.info.subject_id, record.info.metadata) == (f"s{i % 3}", {"i": i})
            np.testing.assert_allclose(record.embedding, x[i], atol=1e-6)


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_hits_carry_their_sequence_attributes_and_embeddings_read_back_as_enrolled(kind, tmp_path, request):
    x = unit_embeddings(np.random.default_rng(3), 3, LAYOUT)
    meta = {"camera": "gate-2", "site": "lab", "captured_at": "2026-05-01T12:00:00+02:00", "tags": ["a", "b"]}
    with open_store(kind, tmp_path, request) as store:
        store.create_gallery("g", MODEL, LAYOUT)
        store.enroll("g", "alice", x[:2], MODEL, [meta, None], ["q0", "q1"])
        store.enroll("g", "bob", x[2:], MODEL, sequence_ids=["q2"])
        [hit] = store.search("g", x[0], MODEL, k=1)
        assert hit.sequence_id == "q0" and hit.attributes == attributes(meta)
        assert hit.attributes.captured_at == datetime(2026, 5, 1, 10, tzinfo=UTC)
        [hit] = store.search("g", x[2], MODEL, k=1)
        assert hit.sequence_id == "q2" and hit.attributes == attributes(None)
        ids, vectors = store.subject_embeddings("g", "alice")
        assert ids == ["q0", "q1"]
        np.testing.assert_allclose(vectors, x[:2], atol=1e-6)
        np.testing.assert_allclose(store.get_embedding("g", "q2"), x[2], atol=1e-6)
        assert store.centre(MODEL) is None
        with pytest.raises(NotFoundError):
            store.get_embedding("g", "q9")
        with pytest.raises(NotFoundError):
            store.subject_embeddings("g", "carol")


def test_a_centred_model_is_served_by_the_local_store_only(tmp_path, milvus_uri):
    centre = np.full((LAYOUT.parts, LAYOUT.part_dim), 0.1, np.float32)
    with open_gallery_store("local", store_path=tmp_path / "g.db", centres={MODEL: centre}) as store:
        np.testing.assert_array_equal(store.centre(MODEL), centre)
        assert store.centre(OTHER) is None
    settings = MilvusSettings(uri=milvus_uri, db_name=unique_db())
    with pytest.raises(InvalidInputError, match="--centring off"):
        open_gallery_store("milvus", milvus=settings, centres={MODEL: centre})


# ----- the Milvus store


def milvus_store(uri: str, db: str):
    return open_gallery_store("milvus", milvus=MilvusSettings(uri=uri, db_name=db))


CAMERAS, SITES, TAGS = ["gate-1", 'odd "cam" \\ é', "gate-3"], ["lab", "yard"], ["day", "night", "rain", "x"]
T0 = datetime(2026, 5, 1, tzinfo=UTC)


def random_metadata(rng: np.random.Generator) -> dict:
    meta: dict = {}
    if rng.random() < 0.8:
        meta["camera"] = CAMERAS[rng.integers(len(CAMERAS))]
    if rng.random() < 0.8:
        meta["site"] = SITES[rng.integers(len(SITES))]
    if rng.random() < 0.7:
        meta["captured_at"] = (T0 + timedelta(hours=int(rng.integers(0, 96)))).isoformat()
    meta["tags"] = sorted(set(rng.choice(TAGS, size=int(rng.integers(0, 3))).tolist()))
    return meta


def random_filter(rng: np.random.Generator) -> SequenceFilter:
    pick = lambda values: sorted(set(rng.choice(values, size=int(rng.integers(1, 3))).tolist()))  # noqa: E731
    kwargs: dict = {}
    if rng.random() < 0.4:
        kwargs["camera"] = pick(CAMERAS)
    if rng.random() < 0.3:
        kwargs["site"] = pick(SITES)
    if rng.random() < 0.4:
        start = int(rng.integers(0, 80))
        kwargs["captured_from"] = (T0 + timedelta(hours=start)).isoformat()
        if rng.random() < 0.5:
            kwargs["captured_to"] = (T0 + timedelta(hours=start + int(rng.integers(1, 30)))).isoformat()
    if rng.random() < 0.3:
        kwargs["tags_all"] = pick(TAGS)
    if rng.random() < 0.3:
        kwargs["tags_any"] = pick(TAGS)
    return SequenceFilter.build(**kwargs)


@pytest.mark.parametrize("nullable", [True, False], ids=["nullable", "server-without-null"])
def test_filters_run_inside_milvus_search_and_agree_with_the_reference_semantics(
    milvus_uri, nullable, monkeypatch
):
    """Random attributes and random filters: Milvus returns exactly the subjects whose sequences match
    (`SequenceFilter.matches`), best first, with the brute-force scores of the matching sequences.

    Also on a server without nullable fields (Milvus before 2.5, such as the 2.3 standalone server on
    PyPI, creates the attribute fields without the flag): sequences without attributes are enrolled,
    read back without them, and matched by the same filters. milvus-lite plays that server here by
    being given the fields as such a server keeps them."""
    if not nullable:
        schema = MilvusStore._sequence_schema

        def without_null(self: MilvusStore, dim: int) -> Any:
            kept = schema(self, dim)
            for f in kept.fields:
                f.nullable = False
            return kept

        monkeypatch.setattr(MilvusStore, "_sequence_schema", without_null)
    rng = np.random.default_rng(5)
    x, labels = clustered_embeddings(60, 3, LAYOUT, noise=0.6, rng=rng)
    metas = [random_metadata(rng) for _ in range(len(x))]
    with milvus_store(milvus_uri, unique_db()) as store:
        store.create_gallery("g", MODEL, LAYOUT)
        assert store._gallery("g").nullable is nullable
        for subject in range(60):
            rows = np.flatnonzero(labels == subject)
            store.enroll("g", f"s{subject:02d}", x[rows], MODEL, [metas[i] for i in rows])
        checked = 0
        for trial in range(25):
            f = random_filter(rng) if trial else SequenceFilter()
            match = np.array([f.matches(attributes(m)) for m in metas])
            query = x[rng.integers(len(x))]
            hits = store.search("g", query, MODEL, k=100, sequence_filter=f)
            scores = x @ query / LAYOUT.parts
            best: dict[str, float] = {}
            for i in np.flatnonzero(match):
                best[f"s{labels[i]:02d}"] = max(best.get(f"s{labels[i]:02d}", -2.0), float(scores[i]))
            assert {h.subject_id for h in hits} == set(best), (f, filter_expression(f, nullable))
            np.testing.assert_allclose(
                [h.score for h in hits], sorted(best.values(), reverse=True), atol=1e-5
            )
            for hit in hits:  # the best sequence named is a matching one, with its attributes as enrolled
                assert f.matches(attributes(store.get_sequence("g", hit.sequence_id).metadata))
                assert hit.attributes == attributes(store.get_sequence("g", hit.sequence_id).metadata)
            checked += bool(best) and len(best) < 60
        assert checked >= 5  # the random filters did select (neither nothing nor everything)
        with pytest.raises(InvalidInputError, match="camera"):
            store.enroll("g", "s00", x[:1], MODEL, [{"camera": ""}])  # attributes are validated


def test_stores_on_one_server_see_each_others_writes_at_once(milvus_uri):
    """Two stores are two replicas: an acknowledged change is visible to the other's next call (Strong)."""
    db = unique_db()
    with milvus_store(milvus_uri, db) as a, milvus_store(milvus_uri, db) as b:
        a.create_gallery("shared.gallery-1", MODEL, LAYOUT)
        x = unit_embeddings(np.random.default_rng(6), 20, LAYOUT)
        for i in range(20):
            a.enroll("shared.gallery-1", f"s{i}", x[i : i + 1], MODEL, sequence_ids=[f"q{i}"])
            (hit,) = b.search("shared.gallery-1", x[i], MODEL, k=1)
            assert hit.sequence_id == f"q{i}"
            b.delete_sequence("shared.gallery-1", f"q{i}")
            assert all(h.sequence_id != f"q{i}" for h in a.search("shared.gallery-1", x[i], MODEL, k=20))
        assert [g.name for g in b.list_galleries()] == ["shared.gallery-1"]
        assert b.get_gallery("shared.gallery-1").sequence_count == 0


def test_concurrent_creations_of_one_gallery_let_exactly_one_win(milvus_uri):
    db = unique_db()
    stores = [milvus_store(milvus_uri, db) for _ in range(4)]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(stores))

    def create(store) -> None:
        barrier.wait()
        try:
            store.create_gallery("race", MODEL, LAYOUT)
            outcomes.append("created")
        except GalleryExistsError:
            outcomes.append("exists")

    threads = [threading.Thread(target=create, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created", "exists", "exists", "exists"]
    for store in stores:
        store.close()


@pytest.mark.parametrize("name", ["a", "A.b-c_d", "x__y", "_d", "9-._"[:1] + "-._", "z" * 64])
def test_gallery_names_map_to_collection_names_one_to_one(name):
    encoded = collection(SEQUENCES, name)
    assert encoded.replace("_", "").isalnum() and gallery_of(encoded) == name
    assert gallery_of("someone_else") is None and gallery_of(SEQUENCES + "bad_x") is None


def test_a_milvus_server_that_is_gone_is_unavailable_at_once_not_a_hang(tmp_path):
    with milvus_lite_server(tmp_path / "m") as server:
        store = milvus_store(server.uri, "default")
        store.create_gallery("g", MODEL, LAYOUT)
        os.kill(server.pid, signal.SIGKILL)
        started = time.monotonic()
        for call in (lambda: store.get_gallery("g"), store.check, lambda: store.list_subjects("g")):
            with pytest.raises(StoreUnavailableError):
                call()
        assert time.monotonic() - started < 30  # refused connections fail fast; a silent server times out
        verdict = answer(StoreUnavailableError("x"))  # what the service answers: 503, come back soon
        assert (verdict.status, verdict.code, verdict.headers) == (
            503,
            "gallery_unavailable",
            {"Retry-After": "1"},
        )
        store.close()
    with pytest.raises(StoreUnavailableError, match="cannot reach"):
        milvus_store(server.uri, "default")


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_ids_no_store_could_hold_are_simply_not_found(kind, tmp_path, request):
    """Path segments reach the store unvalidated: quotes, backslashes, control characters are 404s."""
    with open_store(kind, tmp_path, request) as store:
        store.create_gallery("g", MODEL, LAYOUT)
        store.enroll(
            "g", "s", unit_embeddings(np.random.default_rng(7), 1, LAYOUT), MODEL, sequence_ids=["q"]
        )
        for bad in ['q" or uid != "', "q\\", "a\nb", "x" * 300, ""]:
            with pytest.raises(NotFoundError):
                store.get_sequence("g", bad)
            with pytest.raises(NotFoundError):
                store.delete_sequence("g", bad)
            with pytest.raises(NotFoundError):
                store.list_sequences("g", bad)
            with pytest.raises(NotFoundError):
                store.delete_subject("g", bad)
        assert store.get_gallery("g").sequence_count == 1


def test_a_retry_repairs_the_subject_row_a_crash_between_the_two_writes_left_out(milvus_uri):
    from pymilvus import MilvusClient

    db = unique_db()
    with milvus_store(milvus_uri, db) as store:
        store.create_gallery("g", MODEL, LAYOUT)
        x = unit_embeddings(np.random.default_rng(8), 2, LAYOUT)
        store.enroll("g", "s", x, MODEL, sequence_ids=["a", "b"])
        other = MilvusClient(uri=milvus_uri, db_name=db)  # on the server, as if killed before the subject row
        try:
            other.delete(collection(SUBJECTS, "g"), ids=["s"])
        finally:
            other.close()
        assert store.list_subjects("g").count == 0 and store.get_gallery("g").sequence_count == 2
        store.enroll("g", "s", x, MODEL, sequence_ids=["a", "b"])  # the client's retry: nothing new
        page = store.list_subjects("g")
        assert [(s.subject_id, s.sequence_count) for s in page.data] == [("s", 2)]

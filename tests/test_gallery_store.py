"""The gallery contract as the service uses it: CRUD, validation, model pinning, search semantics, run
against both backends (`local`: SQLite + FAISS; `milvus`: a real milvus-lite server), then the local
store's own persistence (snapshots, the file lock)."""

from __future__ import annotations

import hashlib
import sqlite3

import numpy as np
import pytest

from gaitlu.embedding import EmbeddingLayout
from gallery import (
    GalleryExistsError,
    GalleryNotFoundError,
    IndexSettings,
    InvalidInputError,
    LocalStore,
    ModelMismatchError,
    SequenceIdConflictError,
    SequenceNotFoundError,
    StoreClosedError,
    StoreLockedError,
    SubjectNotFoundError,
)
from gallery.protocol import MAX_K, MAX_PAGE, Store
from tests.support.embeddings import clustered_embeddings, unit_embeddings
from tests.support.galleries import open_store

MODEL = hashlib.sha256(b"model-a").hexdigest()
OTHER = hashlib.sha256(b"model-b").hexdigest()
LAYOUT = EmbeddingLayout(parts=4, part_dim=16)
DIM, PARTS = LAYOUT.size, LAYOUT.parts


@pytest.fixture(params=["local", "milvus"])
def store(request, tmp_path):
    """The same tests against each backend behind the one protocol."""
    with open_store(request.param, tmp_path, request) as s:
        assert isinstance(s, Store)
        yield s


def unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    return unit_embeddings(rng, n, LAYOUT)


def test_gallery_crud_counts_and_conflicts(store):
    info = store.create_gallery("people", MODEL.upper(), LAYOUT, metadata={"site": "lab"})
    assert (info.model_hash, info.layout, info.metadata) == (MODEL, LAYOUT, {"site": "lab"})
    with pytest.raises(GalleryExistsError):
        store.create_gallery("people", MODEL, LAYOUT)
    rng = np.random.default_rng(0)
    store.enroll("people", "alice", unit(rng, 3), MODEL)
    store.enroll("people", "bob", unit(rng, 2), MODEL)
    (listed,) = store.list_galleries()
    assert (listed.name, listed.subject_count, listed.sequence_count) == ("people", 2, 5)
    store.delete_gallery("people")
    assert store.list_galleries() == []
    for call in (lambda: store.get_gallery("people"), lambda: store.delete_gallery("people")):
        with pytest.raises(GalleryNotFoundError):
            call()


@pytest.mark.parametrize("name", ["", "../etc", "a b", "x" * 65, ".hidden", "naïve"])
def test_unsafe_gallery_names_are_refused(store, name):
    with pytest.raises(InvalidInputError):
        store.create_gallery(name, MODEL, LAYOUT)


def test_enroll_validates_everything_before_writing(store):
    store.create_gallery("g", MODEL, LAYOUT)
    rng = np.random.default_rng(1)
    bad = unit(rng, 2)
    bad[1, 3] = np.nan
    cases = [
        (InvalidInputError, dict(embeddings=bad)),
        (InvalidInputError, dict(embeddings=unit(rng, 2)[:, :-1])),  # wrong dim
        (InvalidInputError, dict(embeddings=unit(rng, 1) * 2e19)),  # squares overflow float32: not a vector
        (InvalidInputError, dict(embeddings=np.zeros((1, DIM), np.float32))),  # zero parts: no cosine
        (InvalidInputError, dict(embeddings=unit(rng, 2), metadata=[{"a": 1}])),  # count mismatch
        (InvalidInputError, dict(embeddings=unit(rng, 2), sequence_ids=["x", "x"])),
        (InvalidInputError, dict(embeddings=unit(rng, 1), metadata=[{"blob": "x" * 20_000}])),
        (InvalidInputError, dict(embeddings=unit(rng, 1), subject_id="bad/id")),
        (ModelMismatchError, dict(embeddings=unit(rng, 1), model_hash=OTHER)),
        (InvalidInputError, dict(embeddings=unit(rng, 1), model_hash="not-a-hash")),
    ]
    for error, overrides in cases:
        args = dict(name="g", subject_id="s", model_hash=MODEL) | overrides
        with pytest.raises(error):
            store.enroll(**args)
    assert store.get_gallery("g").sequence_count == 0


def test_model_mismatch_names_both_models_and_the_remedy(store):
    store.create_gallery("g", MODEL, LAYOUT)
    rng = np.random.default_rng(2)
    store.enroll("g", "s", unit(rng), MODEL)
    with pytest.raises(ModelMismatchError) as caught:
        store.search("g", unit(rng)[0], OTHER)
    assert (caught.value.gallery_hash, caught.value.given_hash) == (MODEL, OTHER)
    assert "gaitlu enroll" in str(caught.value) and "serve the gallery's model" in str(caught.value)


def test_embeddings_are_normalised_per_part_and_accept_part_layout(store):
    store.create_gallery("g", MODEL, LAYOUT)
    rng = np.random.default_rng(3)
    x = unit(rng)
    store.enroll("g", "s", 7.0 * x.reshape(1, PARTS, DIM // PARTS), MODEL)  # (n, P, C), scaled
    (hit,) = store.search("g", x[0].reshape(PARTS, DIM // PARTS), MODEL, k=1)
    assert hit.score == pytest.approx(1.0, abs=1e-5)


def test_search_returns_distinct_subjects_by_best_sequence(store):
    store.create_gallery("g", MODEL, LAYOUT)
    x, labels = clustered_embeddings(20, 6, LAYOUT, noise=0.4, rng=np.random.default_rng(4))
    for subject in range(20):
        store.enroll("g", f"s{subject:02d}", x[labels == subject], MODEL)
    query = x[labels == 7][0]
    hits = store.search("g", query, MODEL, k=5)
    assert hits[0].subject_id == "s07" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert len({h.subject_id for h in hits}) == 5
    # Each subject's score is its best sequence's mean per-part cosine, computed here by brute force.
    flat = x @ query / PARTS  # (n,)
    best = {f"s{s:02d}": flat[labels == s].max() for s in range(20)}
    expected = sorted(best.values(), reverse=True)[:5]
    np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-5)  # tolerant of tied subjects
    for hit in hits:
        assert store.get_sequence("g", hit.sequence_id).subject_id == hit.subject_id


def test_mean_of_top_m_and_threshold(store):
    store.create_gallery("g", MODEL, LAYOUT)
    rng = np.random.default_rng(5)
    x, labels = clustered_embeddings(10, 4, LAYOUT, noise=0.5, rng=rng)
    for subject in range(10):
        store.enroll("g", f"s{subject}", x[labels == subject], MODEL)
    query = unit(rng)[0]
    flat = x @ query / PARTS
    mean3 = {f"s{s}": np.sort(flat[labels == s])[-3:].mean() for s in range(10)}
    hits = store.search("g", query, MODEL, k=10, top_m=3)
    np.testing.assert_allclose([h.score for h in hits], sorted(mean3.values(), reverse=True), atol=1e-5)
    cut = float(np.median(list(mean3.values())))
    above = store.search("g", query, MODEL, k=10, top_m=3, threshold=cut)
    assert [h.subject_id for h in above] == [h.subject_id for h in hits if h.score >= cut]


def test_batched_search_matches_single_queries(store):
    store.create_gallery("g", MODEL, LAYOUT)
    x, labels = clustered_embeddings(15, 3, LAYOUT, noise=0.5, rng=np.random.default_rng(6))
    for subject in range(15):
        store.enroll("g", f"s{subject}", x[labels == subject], MODEL)
    batch = store.search_batch("g", x[:4], MODEL, k=3)
    for query, hits in zip(x[:4], batch, strict=True):
        single = store.search("g", query, MODEL, k=3)
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in single], atol=1e-6)


def test_pagination_and_deletes(store):
    store.create_gallery("g", MODEL, LAYOUT)
    rng = np.random.default_rng(7)
    for i in range(25):
        store.enroll("g", f"subj-{i:03d}", unit(rng, 1 + i % 3), MODEL)
    pages = [store.list_subjects("g", offset, 10) for offset in (0, 10, 20)]
    assert [p.count for p in pages] == [25, 25, 25]
    listed = [s.subject_id for p in pages for s in p.data]
    assert listed == sorted(f"subj-{i:03d}" for i in range(25))
    assert [s.sequence_count for s in pages[0].data] == [1 + i % 3 for i in range(10)]

    target = store.list_sequences("g", "subj-002")  # 3 sequences
    store.delete_sequence("g", target[0].sequence_id)
    assert len(store.list_sequences("g", "subj-002")) == 2
    with pytest.raises(SequenceNotFoundError):
        store.delete_sequence("g", target[0].sequence_id)
    store.delete_subject("g", "subj-002")
    with pytest.raises(SubjectNotFoundError):
        store.list_sequences("g", "subj-002")
    with pytest.raises(SubjectNotFoundError):
        store.delete_subject("g", "subj-002")
    only = store.list_sequences("g", "subj-000")[0]
    store.delete_sequence("g", only.sequence_id)  # the last sequence takes its subject with it
    assert store.list_subjects("g").count == 23
    for hits in store.search_batch("g", unit(rng, 20), MODEL, k=25):
        assert not {"subj-000", "subj-002"} & {h.subject_id for h in hits}
    for offset in (-1, 2**63):  # 2**63 overflows SQLite's integers
        with pytest.raises(InvalidInputError, match="offset must be between 0 and"):
            store.list_subjects("g", offset)
    assert store.list_subjects("g", 2**63 - 1).data == []


def test_the_protocol_limits_are_what_every_backend_takes(store):
    store.create_gallery("g", MODEL, LAYOUT)
    rng = np.random.default_rng(9)
    store.enroll("g", "s", unit(rng, 2), MODEL)
    query = unit(rng)[0]
    assert [h.subject_id for h in store.search("g", query, MODEL, k=MAX_K, threshold=-1.0)] == ["s"]
    for bad in ({"k": 0}, {"k": MAX_K + 1}, {"top_m": 0}, {"threshold": 1.01}, {"threshold": -1.01}):
        with pytest.raises(InvalidInputError, match=r"(k|threshold) must be between"):
            store.search("g", query, MODEL, **bad)
    assert store.list_subjects("g", limit=MAX_PAGE).count == 1
    for limit in (0, MAX_PAGE + 1):
        with pytest.raises(InvalidInputError, match="limit between 1 and"):
            store.list_subjects("g", limit=limit)


def test_absurd_query_components_are_refused_not_zeroed(store):
    store.create_gallery("g", MODEL, LAYOUT)
    store.enroll("g", "s", unit(np.random.default_rng(8), 2), MODEL)
    query = np.full(DIM, 2e19, np.float32)  # every part's norm overflows to inf, dividing to zeros
    with pytest.raises(InvalidInputError, match=r"component is 2e\+19"):
        store.search("g", query, MODEL)


def test_client_sequence_ids_make_retries_idempotent(store):
    store.create_gallery("g", MODEL, LAYOUT)
    x = unit(np.random.default_rng(8), 2)
    first = store.enroll("g", "s", x, MODEL, metadata=[{"cam": 1}, None], sequence_ids=["a1", "a2"])
    again = store.enroll("g", "s", x, MODEL, metadata=[{"cam": 1}, None], sequence_ids=["a1", "a2"])
    assert [i.sequence_id for i in again] == ["a1", "a2"] and again == first
    # A retry re-embedded in another batch differs in the last bits: still the same sequence.
    jittered = store.enroll("g", "s", x + np.float32(1e-6), MODEL, sequence_ids=["a1", "a2"])
    assert jittered == first
    assert store.get_gallery("g").sequence_count == 2
    with pytest.raises(SequenceIdConflictError):
        store.enroll("g", "other", x[:1], MODEL, sequence_ids=["a1"])
    with pytest.raises(SequenceIdConflictError):
        store.enroll("g", "s", x[1:], MODEL, sequence_ids=["a1"])
    # All or nothing: a conflict on the second id rolls back the first.
    with pytest.raises(SequenceIdConflictError):
        store.enroll("g", "s", x, MODEL, sequence_ids=["new", "a1"])  # "a1" now with x[1]
    with pytest.raises(SequenceNotFoundError):
        store.get_sequence("g", "new")


def test_restart_keeps_everything_and_uses_a_fresh_snapshot(tmp_path):
    path = tmp_path / "g.db"
    x, labels = clustered_embeddings(30, 4, LAYOUT, noise=0.4, rng=np.random.default_rng(9))
    with LocalStore(path) as store:
        store.create_gallery("g", MODEL, LAYOUT)
        for subject in range(30):
            store.enroll("g", f"s{subject}", x[labels == subject], MODEL)
        before = store.search_batch("g", x[::7], MODEL, k=4)
        with pytest.raises(StoreLockedError):
            LocalStore(path)  # one owner at a time
    with LocalStore(path) as store:
        (stats,) = store.stats()
        assert (stats.index_source, stats.sequences, stats.subjects) == ("snapshot", 120, 30)
        assert store.search_batch("g", x[::7], MODEL, k=4) == before
    with pytest.raises(StoreClosedError):
        store.search("g", x[0], MODEL)


def test_stale_snapshot_is_ignored(tmp_path):
    path = tmp_path / "g.db"
    rng = np.random.default_rng(10)
    x = unit(rng, 5)
    with LocalStore(path) as store:
        store.create_gallery("g", MODEL, LAYOUT)
        infos = store.enroll("g", "s", x, MODEL)
    with sqlite3.connect(path) as conn:  # a change behind the store's back
        conn.execute("DELETE FROM sequences WHERE uid = ?", (infos[0].sequence_id,))
    with LocalStore(path) as store:
        (stats,) = store.stats()
        assert (stats.index_source, stats.sequences) == ("built", 4)
        assert all(h.sequence_id != infos[0].sequence_id for h in store.search("g", x[0], MODEL, k=5))
    with LocalStore(path, index_settings=IndexSettings(exact_max=3, nlist=1)) as store:
        assert store.stats()[0].index_kind == "approximate"  # other settings: the snapshot is not reused


def test_the_local_store_keeps_its_older_name() -> None:
    import gallery

    assert gallery.GalleryStore is gallery.LocalStore  # callers written before the rename still import it

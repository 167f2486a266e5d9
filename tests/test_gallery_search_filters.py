"""The local gallery's filtered search, attributes in hits, centring and stored embeddings.

Filtered results are checked against a brute-force reference that applies `SequenceFilter.matches` (the
contract's reference semantics) to every sequence and ranks the survivors exactly, for the exact index
and the approximate one (IVF + re-scoring), selective and broad filters alike.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from gaitlu.embedding import EmbeddingLayout, centre_parts, normalise_parts
from gallery import IndexSettings, InvalidInputError, LocalStore
from gallery.filters import SequenceAttributes, SequenceFilter, attributes
from tests.support.embeddings import clustered_embeddings

MODEL = hashlib.sha256(b"model-a").hexdigest()
LAYOUT = EmbeddingLayout(parts=4, part_dim=16)
CAMERAS, SITES, TAGS = ("c0", "c1", "c2", "c3"), ("north", "south"), ("day", "night", "rain", "vip")
T0 = datetime(2026, 5, 1, tzinfo=UTC)
APPROXIMATE = IndexSettings(exact_max=200, nlist=16, nprobe=2, train_size=1000, k_factor=2)
FILTERS = {
    "camera": SequenceFilter.build(camera=["c1"]),
    "cameras": SequenceFilter.build(camera=["c0", "c3"], site=["south"]),
    "time": SequenceFilter.build(
        captured_from=(T0 + timedelta(hours=10)).isoformat(),
        captured_to=(T0 + timedelta(hours=30)).isoformat(),
    ),
    "tags_all": SequenceFilter.build(tags_all=["day", "rain"]),
    "tags_any": SequenceFilter.build(tags_any=["vip"], camera=["c2", "c1"]),
    "nothing": SequenceFilter.build(camera=["nowhere"]),
    "broad": SequenceFilter.build(site=["north", "south"], tags_any=["day", "night", "rain", "vip"]),
}


def metadata_for(i: int, rng: np.random.Generator) -> dict:
    meta: dict = {"note": i}
    if i % 7:  # some sequences say nothing about camera or time
        meta["camera"] = CAMERAS[int(rng.integers(len(CAMERAS)))]
        meta["captured_at"] = (T0 + timedelta(minutes=int(rng.integers(0, 48 * 60)))).isoformat()
    meta["site"] = SITES[i % 2]
    meta["tags"] = sorted({TAGS[int(t)] for t in rng.integers(0, len(TAGS), int(rng.integers(0, 3)))})
    return meta


@pytest.fixture(scope="module", params=["exact", "approximate"])
def gallery(request, tmp_path_factory):
    """300 subjects x 4 sequences with attributes; yields (store, vectors, subjects, sequence ids, attrs)."""
    rng = np.random.default_rng(3)
    vectors, labels = clustered_embeddings(300, 4, LAYOUT, 0.8, rng)
    settings = APPROXIMATE if request.param == "approximate" else IndexSettings()
    store = LocalStore(tmp_path_factory.mktemp(request.param) / "g.db", index_settings=settings)
    store.create_gallery("g", MODEL, LAYOUT)
    uids, attrs = [], []
    for subject in np.unique(labels):
        rows = np.flatnonzero(labels == subject)
        metas = [metadata_for(int(r), rng) for r in rows]
        infos = store.enroll("g", f"s{subject}", vectors[rows], MODEL, metas)
        uids += [info.sequence_id for info in infos]
        attrs += [attributes(m) for m in metas]
    store.wait_for_index_builds()
    assert store.stats()[0].index_kind == request.param
    subjects = np.array([f"s{label}" for label in labels])
    yield store, vectors, subjects, np.array(uids), attrs
    store.close()


def reference(vectors, subjects, attrs, query, sequence_filter, k, top_m=1):
    """Brute force: exact scores of the sequences the filter keeps, per subject the mean of its best top_m."""
    keep = np.array([sequence_filter.matches(a) for a in attrs], dtype=bool)
    scores = vectors[keep] @ query / LAYOUT.parts
    per_subject: dict[str, list[float]] = {}
    for subject, score in zip(subjects[keep], scores, strict=True):
        per_subject.setdefault(subject, []).append(float(score))
    ranked = sorted(
        ((float(np.mean(sorted(v, reverse=True)[:top_m])), s) for s, v in per_subject.items()), reverse=True
    )
    return [(s, score) for score, s in ranked[:k]]


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_filtered_search_agrees_with_the_reference_semantics(gallery, name):
    store, vectors, subjects, uids, attrs = gallery
    sequence_filter = FILTERS[name]
    by_uid = dict(zip(uids, attrs, strict=True))
    approximate = store.stats()[0].index_kind == "approximate"
    for q in range(0, 1200, 97):
        query = vectors[q] + 0.05 * np.random.default_rng(q).standard_normal(LAYOUT.size).astype(np.float32)
        query = LAYOUT.flatten(normalise_parts(LAYOUT.unflatten(query)))[0]
        hits = store.search("g", query, MODEL, k=10, sequence_filter=sequence_filter)
        expected = reference(vectors, subjects, attrs, query, sequence_filter, 10)
        # k hits whenever k matching subjects exist: a filter never costs results
        assert len(hits) == len(expected)
        for hit in hits:  # every hit is a matching sequence, and carries its attributes
            assert (
                sequence_filter.matches(by_uid[hit.sequence_id]) and hit.attributes == by_uid[hit.sequence_id]
            )
        if not approximate:  # exact index: the same ranking, up to ties
            np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=1e-5)
        else:  # approximate codes: scores within fp16 rounding, the true best subject found
            assert not expected or {h.subject_id for h in hits[:3]} & {s for s, _ in expected[:3]}
            np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=0.02)


def test_an_empty_filter_is_no_filter_and_hits_carry_attributes(gallery):
    store, vectors, _, uids, attrs = gallery
    plain = store.search("g", vectors[5], MODEL, k=5)
    assert store.search("g", vectors[5], MODEL, k=5, sequence_filter=SequenceFilter()) == plain
    by_uid = dict(zip(uids, attrs, strict=True))
    assert all(hit.attributes == by_uid[hit.sequence_id] for hit in plain)


def test_top_m_counts_only_the_sequences_a_filter_keeps(tmp_path):
    rng = np.random.default_rng(1)
    vectors, _ = clustered_embeddings(2, 3, LAYOUT, 0.3, rng)
    with LocalStore(tmp_path / "g.db") as store:
        store.create_gallery("g", MODEL, LAYOUT)
        metas = [{"camera": "a"}, {"camera": "b"}, {"camera": "b"}]
        store.enroll("g", "x", vectors[:3], MODEL, metas)
        store.enroll("g", "y", vectors[3:], MODEL, metas)
        only_a = SequenceFilter.build(camera=["a"])
        [hit_x, _] = store.search("g", vectors[1], MODEL, k=2, top_m=3, sequence_filter=only_a)
        # x has one sequence on camera a: its score is that one's, not a mean padded with others
        assert hit_x.subject_id == "x" and hit_x.score == pytest.approx(float(vectors[0] @ vectors[1]) / 4)
        store.delete_sequence("g", hit_x.sequence_id)
        assert [h.subject_id for h in store.search("g", vectors[1], MODEL, k=2, sequence_filter=only_a)] == [
            "y"
        ]


def test_malformed_attributes_are_refused_at_enrolment(tmp_path):
    rng = np.random.default_rng(2)
    vectors, _ = clustered_embeddings(1, 2, LAYOUT, 0.3, rng)
    with LocalStore(tmp_path / "g.db") as store:
        store.create_gallery("g", MODEL, LAYOUT)
        with pytest.raises(InvalidInputError, match="captured_at"):
            store.enroll("g", "x", vectors, MODEL, [{"camera": "a"}, {"captured_at": "2026-05-01 12:00"}])
        assert store.get_gallery("g").sequence_count == 0  # all or none


def test_attributes_are_read_back_from_the_database_after_a_restart(tmp_path):
    rng = np.random.default_rng(4)
    vectors, _ = clustered_embeddings(3, 2, LAYOUT, 0.3, rng)
    metas = [{"site": "a", "tags": ["t"]}, None, {"site": "b", "captured_at": "2026-01-01T00:00:00+01:00"}]
    with LocalStore(tmp_path / "g.db") as store:
        store.create_gallery("g", MODEL, LAYOUT)
        for s in range(3):
            store.enroll("g", f"s{s}", vectors[2 * s : 2 * s + 2], MODEL, [metas[s], metas[s]])
    with LocalStore(tmp_path / "g.db") as store:
        hits = store.search(
            "g", vectors[0], MODEL, k=3, sequence_filter=SequenceFilter.build(site=["a", "b"])
        )
        assert sorted(h.subject_id for h in hits) == ["s0", "s2"]
        got = {h.subject_id: h.attributes for h in hits}
        assert got["s0"] == SequenceAttributes(site="a", tags=frozenset({"t"}))
        assert got["s2"].captured_at == datetime(2025, 12, 31, 23, tzinfo=UTC)


def test_centred_galleries_score_centred_vectors_and_keep_the_enrolled_ones(tmp_path):
    rng = np.random.default_rng(5)
    vectors, _ = clustered_embeddings(4, 2, LAYOUT, 0.5, rng)
    centre = LAYOUT.unflatten(vectors.mean(axis=0))[0] * 0.9  # (P, C)
    with LocalStore(tmp_path / "g.db") as store:
        store.create_gallery("g", MODEL, LAYOUT)
        for s in range(4):
            store.enroll(
                "g", f"s{s}", vectors[2 * s : 2 * s + 2], MODEL, sequence_ids=[f"q{2 * s}", f"q{2 * s + 1}"]
            )
        raw = store.search("g", vectors[0], MODEL, k=4)
    with LocalStore(tmp_path / "g.db", centres={MODEL: centre}) as store:  # snapshot is stale: rebuilt
        hits = store.search("g", vectors[0], MODEL, k=4)
        np.testing.assert_array_equal(store.get_embedding("g", "q3"), vectors[3])  # stored as enrolled
        ids, stored = store.subject_embeddings("g", "s1")
        assert ids == ["q2", "q3"] and np.array_equal(stored, vectors[2:4])
    c = LAYOUT.flatten(centre_parts(LAYOUT.unflatten(vectors), centre))  # (n, D)
    best = {f"s{s}": max(float(c[0] @ c[i]) / 4 for i in (2 * s, 2 * s + 1)) for s in range(4)}
    for hit in hits:
        assert hit.score == pytest.approx(best[hit.subject_id], abs=1e-5)
    assert [h.score for h in hits] != pytest.approx([h.score for h in raw])  # centring spread them

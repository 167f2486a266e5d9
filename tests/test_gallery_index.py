"""Index kinds: the approximate index agrees with exact search, every kind removes ids, snapshots round-trip,
retraining happens."""

from __future__ import annotations

import hashlib

import faiss
import numpy as np
import pytest

from gaitlu.embedding import EmbeddingLayout
from gallery import IndexSettings, LocalStore
from gallery.index import GalleryIndex, new_exact, projection, train_approximate
from tests.support.embeddings import clustered_embeddings

MODEL = hashlib.sha256(b"model").hexdigest()
LAYOUT = EmbeddingLayout(parts=4, part_dim=32)
DIM, PARTS = LAYOUT.size, LAYOUT.parts  # the index sees flattened vectors of DIM floats
PCA = {"pca_dim": 32, "pca_train_size": 512}
APPROX = {
    "ivf-flat": IndexSettings(exact_max=500, codec="flat", refine="none", pca_dim=None, nprobe=8),
    "pca-sq8": IndexSettings(exact_max=500, codec="sq8", refine="none", nprobe=8, **PCA),
    "pca-pq": IndexSettings(exact_max=500, codec="pq", pq_m=8, refine="none", nprobe=8, **PCA),
    "pca-pqfs-fp16": IndexSettings(exact_max=500, nprobe=8, **PCA),  # the default codes
    "pqfs-sq8": IndexSettings(exact_max=500, refine="sq8", pca_dim=None, nprobe=8),
}


@pytest.fixture(scope="module")
def data():
    return clustered_embeddings(400, 5, LAYOUT, noise=0.5, rng=np.random.default_rng(0))


def sampler(x: np.ndarray):
    return lambda n: [x[:n]]


def recall_at(k: int, exact_ids: np.ndarray, approx_ids: np.ndarray) -> float:
    """Share of the exact top-k found in the approximate top-k (set overlap, so tied orders do not matter)."""
    return float(np.mean([len(set(e) & set(a)) / k for e, a in zip(exact_ids, approx_ids, strict=True)]))


def new_exact_search(x: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    flat = new_exact(x.shape[1])
    flat.add_with_ids(x, np.arange(len(x), dtype=np.int64))
    return flat.search(queries, k)


def test_projection_is_orthonormal_and_keeps_inner_products_of_low_rank_data(data):
    x, _ = data
    basis = projection(x[:512], 64)  # (64, D); the data has rank 64 plus small noise
    np.testing.assert_allclose(basis @ basis.T, np.eye(64), atol=1e-4)
    full, reduced = x[:50] @ x[50:100].T, (x[:50] @ basis.T) @ (x[50:100] @ basis.T).T
    assert np.abs(full - reduced).max() < 0.1 * PARTS


@pytest.mark.parametrize("kind", sorted(APPROX))
def test_approximate_index_recall_and_removal(data, kind):
    x, _ = data
    ids = np.arange(len(x), dtype=np.int64) + 1000
    settings = APPROX[kind]
    flat = new_exact(DIM)
    flat.add_with_ids(x, ids)
    approx = GalleryIndex.build(DIM, len(x), settings, sampler(x), [(ids, x)])
    assert approx.built.kind == "approximate"
    queries = x[::20]
    _, exact_ids = flat.search(queries, 5)  # a query's own subject: the neighbours that matter
    _, approx_ids = approx.search(queries, 5)
    assert recall_at(5, exact_ids, approx_ids) >= 0.95
    gone = exact_ids[:, 0]  # each query's own sequence
    approx.remove(gone)
    assert approx.ntotal == len(x) - len(set(gone.tolist()))
    _, after = approx.search(queries, 10)
    assert not set(after.ravel().tolist()) & set(gone.tolist())


def test_refine_returns_exact_inner_products_of_the_indexed_vectors(data):
    x, _ = data
    ids = np.arange(len(x), dtype=np.int64)
    settings = IndexSettings(exact_max=500, refine="flat", pca_dim=None, nprobe=8, k_factor=4)
    approx = GalleryIndex.build(DIM, len(x), settings, sampler(x), [(ids, x)])
    assert isinstance(approx.index, faiss.IndexIVFPQFastScan)  # 4-bit PQ: its own scores are rough
    queries = x[::50]
    scores, found = approx.search(queries, 10)
    assert (found >= 0).all()
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, x[found]), atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    # Asking for a large share of the gallery scans the stored vectors outright: the exact top-k.
    _, wide = approx.search(queries, 600)
    _, truth = new_exact_search(x, queries, 600)
    assert recall_at(600, truth, wide) > 0.999  # float32 ties at the boundary aside


def test_snapshot_round_trip_keeps_projection_codes_and_refine(tmp_path, data):
    x, _ = data
    ids = np.arange(len(x), dtype=np.int64)
    settings = APPROX["pca-pqfs-fp16"]
    approx = GalleryIndex.build(DIM, len(x), settings, sampler(x), [(ids, x)])
    approx.remove(ids[:10])
    path, tag = tmp_path / "g.faiss", {"version": 3}
    approx.save(path, tag)
    loaded = GalleryIndex.load(path, tag, settings)
    assert loaded is not None and loaded.built.source == "snapshot" and loaded.ntotal == len(x) - 10
    expected, got = approx.search(x[::25], 5), loaded.search(x[::25], 5)
    np.testing.assert_array_equal(expected[1], got[1])
    np.testing.assert_allclose(expected[0], got[0], rtol=1e-6)
    assert GalleryIndex.load(path, {"version": 4}, settings) is None  # stale
    path.write_bytes(path.read_bytes()[:-100])
    assert GalleryIndex.load(path, tag, settings) is None  # truncated


def test_pq_codes_fall_back_to_sq8_on_a_small_training_sample(data):
    x, _ = data
    index = train_approximate(sampler(x[:300]), DIM, 300, IndexSettings(pca_dim=None))
    assert isinstance(index.index, faiss.IndexIVFScalarQuantizer)


def test_exact_index_removes_ids(data):
    x, _ = data
    index = GalleryIndex.build(DIM, 100, IndexSettings(), sampler(x), [(np.arange(100), x[:100])])
    assert index.built.kind == "exact"
    index.remove(np.array([3, 4]))
    _, ids = index.search(x[3:5], 100)
    assert index.ntotal == 98 and not {3, 4} & set(ids.ravel().tolist())


def test_untrained_pca_rejects_bad_pq_layout(data):
    x, _ = data
    with pytest.raises(ValueError, match="pq_m"):
        train_approximate(
            sampler(x), DIM, len(x), IndexSettings(codec="pq", pq_m=7, pca_dim=32, pca_train_size=64)
        )


def test_store_switches_to_approximate_keeps_results_and_retrains(tmp_path, data):
    x, labels = data
    settings = IndexSettings(exact_max=600, pca_dim=32, pca_train_size=256, nprobe=16, retrain_factor=2.0)
    with LocalStore(tmp_path / "g.db", index_settings=settings, synchronous="NORMAL") as store:
        store.create_gallery("g", MODEL, LAYOUT)
        seen = []
        for subject in range(400):
            store.enroll("g", f"s{subject}", x[labels == subject], MODEL)
            assert store.wait_for_index_builds(60)  # retraining runs in the background
            seen.append(store.stats()[0])
        kinds = [s.index_kind for s in seen]
        assert kinds[119] == "exact" and kinds[120] == "approximate"  # 605 sequences > 600
        trained = {s.sequences for s in seen if s.index_kind == "approximate"}
        assert len(trained) > 1
        # Subject-level answers agree with brute force on nearly every query (ties tolerated via scores).
        queries = x[::10]
        hits = store.search_batch("g", queries, MODEL, k=5)
        sims = queries @ x.T / PARTS  # (q, n)
        agree = 0
        for row, found in enumerate(hits):
            best = np.array([sims[row][labels == s].max() for s in range(400)])
            agree += found[0].subject_id == f"s{int(best.argmax())}"
        assert agree / len(queries) >= 0.95
        # Dropping far below the threshold goes back to the exact index.
        for subject in range(350):
            store.delete_subject("g", f"s{subject}")
        assert store.wait_for_index_builds(60)
        assert store.stats()[0].index_kind == "exact"

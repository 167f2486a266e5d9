"""Index kinds: the approximate index agrees with exact search, every kind removes ids, retraining happens."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from gallery import GalleryStore, IndexSettings
from gallery.index import GalleryIndex, new_exact, projection, train_approximate
from gallery.testing import clustered_embeddings

MODEL = hashlib.sha256(b"model").hexdigest()
DIM, PARTS = 128, 4
APPROX = {
    "ivf-flat": IndexSettings(exact_max=500, codec="flat", pca_dim=None, nprobe=8),
    "pca-sq8": IndexSettings(exact_max=500, codec="sq8", pca_dim=32, pca_train_size=512, nprobe=8),
    "pca-pq": IndexSettings(exact_max=500, codec="pq", pq_m=8, pca_dim=32, pca_train_size=512, nprobe=8),
}


@pytest.fixture(scope="module")
def data():
    return clustered_embeddings(400, 5, DIM, PARTS, noise=0.5, rng=np.random.default_rng(0))


def sampler(x: np.ndarray):
    return lambda n: [x[:n]]


def recall_at(k: int, exact_ids: np.ndarray, approx_ids: np.ndarray) -> float:
    """Share of the exact top-k found in the approximate top-k (set overlap, so tied orders do not matter)."""
    return float(np.mean([len(set(e) & set(a)) / k for e, a in zip(exact_ids, approx_ids, strict=True)]))


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
    with GalleryStore(tmp_path / "g.db", index_settings=settings, synchronous="NORMAL") as store:
        store.create_gallery("g", MODEL, DIM, PARTS)
        seen = []
        for subject in range(400):
            store.enroll("g", f"s{subject}", x[labels == subject], MODEL)
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
        assert store.stats()[0].index_kind == "exact"

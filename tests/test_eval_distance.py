"""Part-wise distances: agreement with the definition, blockwise = whole, cosine vs Euclidean, ties."""

from __future__ import annotations

import numpy as np
import pytest

from gaitlu.embedding import normalise_parts
from gaitlu.evaluation.distance import as_parts, iter_distance_blocks, pairwise_distances, stable_order


def brute_force(probe: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    """The definition, one pair at a time."""
    out = np.zeros((len(probe), len(gallery)))
    for i, x in enumerate(probe):
        for j, y in enumerate(gallery):
            if metric == "euc":
                out[i, j] = np.mean([np.linalg.norm(xp - yp) for xp, yp in zip(x, y, strict=True)])
            else:
                cos = [
                    xp @ yp / (np.linalg.norm(xp) * np.linalg.norm(yp)) for xp, yp in zip(x, y, strict=True)
                ]
                out[i, j] = 1 - np.mean(cos)
    return out


@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_distances_follow_the_per_part_definition(metric: str) -> None:
    rng = np.random.default_rng(0)
    probe, gallery = rng.normal(size=(7, 5, 8)), rng.normal(size=(9, 5, 8))
    np.testing.assert_allclose(
        pairwise_distances(probe, gallery, metric), brute_force(probe, gallery, metric), atol=1e-4
    )


@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_small_blocks_give_the_same_matrix(metric: str) -> None:
    rng = np.random.default_rng(1)
    probe, gallery = rng.normal(size=(50, 3, 4)), rng.normal(size=(20, 3, 4))
    blocks = list(iter_distance_blocks(probe, gallery, metric, max_block_bytes=16 * 20 * 7))  # 7 rows each
    assert len(blocks) == 8 and blocks[-1][0] == slice(49, 50)
    whole = pairwise_distances(probe, gallery, metric)  # BLAS may round another block size differently
    np.testing.assert_allclose(np.concatenate([d for _, d in blocks]), whole, rtol=1e-6, atol=1e-6)


def test_two_dimensional_embeddings_are_one_part() -> None:
    flat = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert as_parts(flat).shape == (3, 1, 4)
    with pytest.raises(ValueError, match="shape"):
        as_parts(np.zeros((2, 3, 4, 5)))


def test_cosine_and_euclidean_agree_on_normalised_single_part_inputs() -> None:
    # For unit vectors |x - y|^2 = 2 (1 - cos), so both metrics rank the gallery identically.
    rng = np.random.default_rng(2)
    probe = normalise_parts(as_parts(rng.normal(size=(30, 16))))
    gallery = normalise_parts(as_parts(rng.normal(size=(40, 16))))
    euc, cos = pairwise_distances(probe, gallery, "euc"), pairwise_distances(probe, gallery, "cos")
    np.testing.assert_allclose(euc**2, 2 * cos, atol=1e-5)
    np.testing.assert_array_equal(stable_order(euc), stable_order(cos))


def test_cosine_ignores_per_part_scale() -> None:
    rng = np.random.default_rng(3)
    probe, gallery = rng.normal(size=(4, 3, 6)), rng.normal(size=(5, 3, 6))
    scaled = probe * np.array([1.0, 10.0, 0.1])[None, :, None]  # rescale each part differently
    np.testing.assert_allclose(
        pairwise_distances(scaled, gallery, "cos"), pairwise_distances(probe, gallery, "cos"), atol=1e-6
    )


def test_ties_keep_gallery_order() -> None:
    gallery = np.array([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0], [0.0, 3.0]])  # rows 0/2 and 1/3 identical
    dist = pairwise_distances(np.array([[1.0, 1.0], [2.0, 0.0]]), gallery)
    np.testing.assert_array_equal(stable_order(dist), [[0, 1, 2, 3], [0, 2, 1, 3]])


def test_unknown_metric_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        pairwise_distances(np.zeros((1, 2)), np.zeros((1, 2)), "l1")

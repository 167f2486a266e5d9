"""Part-wise distances between gait embeddings, computed in probe blocks to bound memory.

Embeddings are (N, P, C): P horizontal parts of C floats (a 2-D (N, D) array is one part). Like
OpenGait, distances are computed per part and averaged over parts:
  euc: mean over parts of the Euclidean distance;
  cos: 1 - mean over parts of the cosine similarity (each part L2-normalised first).
Only a (block, gallery) slab is alive at a time and the gallery is never copied, so a 10k x 10k
evaluation with 31 x 512 features needs the embeddings plus about `max_block_bytes`, never the full
N x N matrix or an N x N x P tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from gaitlu.embedding import ZERO_NORM, part_norms

METRICS = ("euc", "cos")
DEFAULT_BLOCK_BYTES = 256 * 2**20  # scratch memory per probe block


def as_parts(emb: np.ndarray) -> np.ndarray:
    """View embeddings as (N, P, C) float32; (N, D) becomes (N, 1, D)."""
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim == 2:
        return emb[:, None, :]  # (N, 1, D)
    if emb.ndim != 3:
        raise ValueError(f"embeddings must be (N, D) or (N, P, C), got shape {emb.shape}")
    return emb


def _inverse_part_norms(emb: np.ndarray) -> np.ndarray:
    """(N, P) 1 / |part|. An all-zero part gets a finite scale, so it stays zero (cosine 0 to everything)."""
    scale: np.ndarray = 1.0 / np.maximum(part_norms(emb), ZERO_NORM)
    return scale


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def _block_rows(num_gallery: int, max_block_bytes: int) -> int:
    # A few float32 (block, gallery) arrays are alive at once: the product, the accumulator, a sort.
    return max(1, max_block_bytes // (16 * max(num_gallery, 1)))


def _euclidean(block: np.ndarray, gallery: np.ndarray, gallery_sq: np.ndarray) -> np.ndarray:
    block_sq = np.einsum("bpc,bpc->bp", block, block)  # (B, P)
    total = np.zeros((len(block), len(gallery)), dtype=np.float32)
    for p in range(block.shape[1]):
        # gallery[:, p] is a strided (G, C) view that BLAS reads in place: the gallery is never copied.
        sq = block_sq[:, p, None] + gallery_sq[None, :, p] - 2.0 * (block[:, p] @ gallery[:, p].T)  # (B, G)
        total += np.sqrt(np.maximum(sq, 0.0))  # rounding can make exact matches slightly negative
    mean: np.ndarray = total / block.shape[1]
    return mean


def _cosine(block: np.ndarray, gallery: np.ndarray, gallery_scale: np.ndarray) -> np.ndarray:
    block_scale = _inverse_part_norms(block)  # (B, P)
    total = np.zeros((len(block), len(gallery)), dtype=np.float32)
    for p in range(block.shape[1]):
        total += (block[:, p] @ gallery[:, p].T) * block_scale[:, p, None] * gallery_scale[None, :, p]
    mean: np.ndarray = 1.0 - total / block.shape[1]
    return mean


def iter_distance_blocks(
    probe: np.ndarray,
    gallery: np.ndarray,
    metric: str = "euc",
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (probe rows, distances (rows, N_gallery) float32) block by block, in probe order."""
    _check_metric(metric)
    probe, gallery = as_parts(probe), as_parts(gallery)
    if probe.shape[1:] != gallery.shape[1:]:
        raise ValueError(f"probe parts {probe.shape[1:]} differ from gallery parts {gallery.shape[1:]}")
    distance: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (block, gallery, gallery stat)
    if metric == "cos":
        distance, gallery_stat = _cosine, _inverse_part_norms(gallery)  # (G, P)
    else:
        distance, gallery_stat = _euclidean, np.einsum("gpc,gpc->gp", gallery, gallery)  # (G, P)
    rows = _block_rows(len(gallery), max_block_bytes)
    for start in range(0, len(probe), rows):
        block = probe[start : start + rows]  # (B, P, C)
        yield slice(start, start + len(block)), distance(block, gallery, gallery_stat)


def pairwise_distances(probe: np.ndarray, gallery: np.ndarray, metric: str = "euc") -> np.ndarray:
    """The full (N_probe, N_gallery) distance matrix; for small sets and tests."""
    num_gallery = len(as_parts(gallery))
    blocks = [d for _, d in iter_distance_blocks(probe, gallery, metric)]
    return np.concatenate(blocks) if blocks else np.zeros((0, num_gallery), dtype=np.float32)


def stable_order(dist: np.ndarray) -> np.ndarray:
    """Gallery indices sorted by distance per row; ties keep gallery order, so results are reproducible."""
    return np.argsort(dist, axis=1, kind="stable")

"""Verification (1:1) figures from genuine and impostor pairs: EER and TAR at a fixed FAR.

Rank-1 says whether the right person comes first in a gallery; a deployment that accepts or rejects
one claimed identity needs a threshold instead, and these figures say how well one threshold separates
same-person pairs from different-person pairs. Pairs are every probe against every gallery sequence of
another view (CASIA-B's cross-view setting: identical views are left out, as in the Rank-1 headline).
Scores are similarities (higher = more alike): the negative of the protocol's distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gaitlu.errors import DataError
from gaitlu.evaluation.distance import iter_distance_blocks
from gaitlu.evaluation.embeddings import EmbeddingSet

FARS = (1e-2, 1e-3)


@dataclass(frozen=True)
class PairScores:
    """Similarity of every genuine (same subject) and impostor (other subject) pair."""

    genuine: np.ndarray  # (G,) float32
    impostor: np.ndarray  # (I,) float32


def pair_scores(
    probe: EmbeddingSet, gallery: EmbeddingSet, metric: str = "euc", cross_view: bool = True
) -> PairScores:
    """Scores of all probe x gallery pairs (only pairs of different views when `cross_view`)."""
    if len(probe) == 0 or len(gallery) == 0:
        raise DataError(f"no probes ({len(probe)}) or no gallery ({len(gallery)}) sequences to pair")
    genuine, impostor = [], []
    for block, dist in iter_distance_blocks(probe.emb, gallery.emb, metric):
        same = probe.subject[block, None] == gallery.subject[None, :]  # (B, G)
        keep = probe.view[block, None] != gallery.view[None, :] if cross_view else np.ones_like(same)
        genuine.append(-dist[same & keep])
        impostor.append(-dist[~same & keep])
    scores = PairScores(np.concatenate(genuine), np.concatenate(impostor))
    if len(scores.genuine) == 0 or len(scores.impostor) == 0:
        raise DataError("need at least one genuine and one impostor pair")
    return scores


def _rates(scores: PairScores) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, FRR) at every distinct threshold `accept if score >= t`, thresholds descending."""
    thresholds = np.unique(np.concatenate([scores.genuine, scores.impostor]))[::-1]  # (K,)
    impostor = np.sort(scores.impostor)
    genuine = np.sort(scores.genuine)
    # Pairs at or above each threshold are accepted.
    far = (len(impostor) - np.searchsorted(impostor, thresholds, side="left")) / len(impostor)
    frr = np.searchsorted(genuine, thresholds, side="left") / len(genuine)
    return far, frr


def equal_error_rate(scores: PairScores) -> float:
    """The error rate where false accepts and false rejects are equal (linear interpolation), in %."""
    far, frr = _rates(scores)  # far rises, frr falls as the threshold drops
    diff = far - frr
    i = int(np.searchsorted(diff, 0.0))  # first threshold where FAR >= FRR
    if i == 0:
        return 100.0 * float(far[0] + frr[0]) / 2
    if i == len(diff):
        return 100.0 * float(far[-1] + frr[-1]) / 2
    w = diff[i] / (diff[i] - diff[i - 1])  # fraction of the step back to where diff crosses 0
    return 100.0 * float(far[i] - w * (far[i] - far[i - 1]))


def tar_at_far(scores: PairScores, far_target: float) -> float:
    """True accept rate (%) at the loosest threshold whose false accept rate is at most `far_target`."""
    if not 0 < far_target < 1:
        raise ValueError(f"far_target must be in (0, 1), got {far_target}")
    far, frr = _rates(scores)
    allowed = np.flatnonzero(far <= far_target)
    if len(allowed) == 0:
        return 0.0
    return 100.0 * float(1.0 - frr[allowed[-1]])


@dataclass(frozen=True)
class VerificationReport:
    eer: float  # %
    tar: dict[float, float]  # FAR -> TAR (%)
    genuine_pairs: int
    impostor_pairs: int

    def headline(self) -> dict[str, float]:
        return {"EER": self.eer, **{f"TAR@FAR={far:g}": t for far, t in self.tar.items()}}


def verification(scores: PairScores, fars: tuple[float, ...] = FARS) -> VerificationReport:
    return VerificationReport(
        equal_error_rate(scores),
        {far: tar_at_far(scores, far) for far in fars},
        len(scores.genuine),
        len(scores.impostor),
    )

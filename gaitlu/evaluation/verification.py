"""Verification (1:1) figures from genuine and impostor pairs: EER and TAR at a fixed FAR.

Rank-1 says whether the right person comes first in a gallery; a deployment that accepts or rejects
one claimed identity needs a threshold instead, and these figures say how well one threshold separates
same-person pairs from different-person pairs. Pairs are every probe against every gallery sequence of
another view (CASIA-B's cross-view setting: identical views are left out, as in the Rank-1 headline).
Scores are similarities (higher = more alike): the negative of the protocol's distance. `Rates` is the
one place where genuine/impostor scores become FARs and thresholds; the calibration tables that the
service decides with (gaitlu.evaluation.calibration) are built on it too.
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


class Rates:
    """What accepting `score >= t` does on one set of genuine and impostor scores (sorted once): the
    false accept rate (share of impostor scores accepted), the true accept rate, and the threshold
    that holds a FAR. Every FAR and threshold figure of the project comes from here (the manifest's
    calibration tables, EER, TAR@FAR)."""

    def __init__(self, scores: PairScores) -> None:
        self.genuine = np.sort(np.asarray(scores.genuine, np.float64))  # ascending
        self.impostor = np.sort(np.asarray(scores.impostor, np.float64))

    def far(self, threshold: np.ndarray | float) -> np.ndarray:
        """Share of impostor scores >= threshold (elementwise for an array of thresholds)."""
        return _share_at_least(self.impostor, threshold)

    def tar(self, threshold: np.ndarray | float) -> np.ndarray:
        """Share of genuine scores >= threshold."""
        return _share_at_least(self.genuine, threshold)

    def threshold(self, far: float) -> float:
        """The lowest threshold (6 decimals) that accepts at most far x n impostor scores: halfway
        between the last impostor score it may accept and the next one down; with none allowed, just
        above the highest impostor score."""
        n = len(self.impostor)
        allowed = int(np.floor(far * n))  # impostor scores that may be >= the threshold
        if allowed >= n:
            score = float(self.impostor[0])
        elif allowed == 0:
            score = float(np.nextafter(self.impostor[-1], np.inf))
        else:
            above, below = self.impostor[n - allowed], self.impostor[n - allowed - 1]
            score = float((above + below) / 2) if above > below else float(np.nextafter(above, np.inf))
        score = round(score, 6)
        while float(self.far(score)) > far:  # rounding may not let one more impostor in
            score = round(float(np.nextafter(score, np.inf)) + 1e-6, 6)
        return score


def _share_at_least(ascending: np.ndarray, threshold: np.ndarray | float) -> np.ndarray:
    return (len(ascending) - np.searchsorted(ascending, threshold, side="left")) / len(ascending)


def equal_error_rate(scores: PairScores) -> float:
    """The error rate where false accepts and false rejects are equal (linear interpolation), in %."""
    rates = Rates(scores)
    thresholds = np.unique(np.concatenate([rates.genuine, rates.impostor]))[::-1]  # (K,) descending
    far, frr = rates.far(thresholds), 1.0 - rates.tar(thresholds)  # far rises, frr falls as t drops
    diff = far - frr
    i = int(np.searchsorted(diff, 0.0))  # first threshold where FAR >= FRR
    if i == 0:
        return 100.0 * float(far[0] + frr[0]) / 2
    if i == len(diff):
        return 100.0 * float(far[-1] + frr[-1]) / 2
    w = diff[i] / (diff[i] - diff[i - 1])  # fraction of the step back to where diff crosses 0
    return 100.0 * float(far[i] - w * (far[i] - far[i - 1]))


def tar_at_far(scores: PairScores, far_target: float) -> float:
    """True accept rate (%) at the threshold that holds the false accept rate at most `far_target`."""
    if not 0 < far_target < 1:
        raise ValueError(f"far_target must be in (0, 1), got {far_target}")
    rates = Rates(scores)
    return 100.0 * float(rates.tar(rates.threshold(far_target)))


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

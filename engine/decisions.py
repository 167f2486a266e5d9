"""What a search or a verification decides: thresholds from a FAR, the FAR of a score, 1:1 scores.

The model's calibration (`gaitlu calibrate`, the manifest's `calibration`) turns scores into estimated
false accept rates and a `max_far` into a score threshold; without one, FARs are None and a `max_far` is
refused (`NotCalibrated`, naming the remedy). Scores are always the galleries' own: mean per-part
cosines of per-part-normalised (and, with the model's centring, centred) vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import NotCalibrated
from gaitlu.embedding import EmbeddingLayout, centre_parts, normalise_parts
from gaitlu.manifest import Calibration, Comparison
from gallery.errors import InvalidInputError

MIN_FAR, MAX_FAR = 1e-9, 0.5  # a max_far outside this range is not a decision anyone means


@dataclass(frozen=True)
class Threshold:
    """The score a request decides at (None: no decision asked), and the FAR it was given as, if any."""

    score: float | None
    max_far: float | None


def resolve_threshold(
    calibration: Calibration | None, comparison: Comparison, threshold: float | None, max_far: float | None
) -> Threshold:
    """A request's threshold: given as a score, or as a FAR through the calibration (never both)."""
    if threshold is not None and max_far is not None:
        raise InvalidInputError("give a score threshold or a max_far, not both")
    if max_far is None:
        return Threshold(threshold, None)
    if not MIN_FAR <= max_far <= MAX_FAR:
        raise InvalidInputError(f"max_far must be between {MIN_FAR:g} and {MAX_FAR:g}")
    if calibration is None:
        raise NotCalibrated()
    return Threshold(calibration.table(comparison).threshold(max_far), max_far)


def far_of(calibration: Calibration | None, comparison: Comparison, score: float) -> float | None:
    """The estimated FAR of a score, or None for an uncalibrated model."""
    return None if calibration is None else calibration.table(comparison).far(score)


def scores(
    query: np.ndarray, stored: np.ndarray, layout: EmbeddingLayout, centre: np.ndarray | None
) -> np.ndarray:
    """(D,) query x (n, D) stored vectors -> (n,) scores exactly as the galleries compute them."""
    q, s = layout.unflatten(query), layout.unflatten(stored)  # (1, P, C), (n, P, C)
    if centre is not None:
        q, s = centre_parts(q, centre), centre_parts(s, centre)
    else:
        q, s = normalise_parts(q), normalise_parts(s)
    mean_cosines: np.ndarray = np.einsum("pc,npc->n", q[0].astype(np.float64), s.astype(np.float64))
    return mean_cosines / layout.parts


def subject_score(per_sequence: np.ndarray, top_m: int) -> tuple[float, int]:
    """A subject's score from its sequences' scores: the mean of the best `top_m` (as /search
    aggregates), and the index of its best sequence."""
    order = np.argsort(-per_sequence, kind="stable")
    return float(per_sequence[order[:top_m]].mean()), int(order[0])


@dataclass(frozen=True)
class Verification:
    """One probe against one subject or one sequence: score, its FAR and the decision."""

    comparison: Comparison
    score: float
    far: float | None
    threshold: Threshold
    sequence_id: str | None  # the stored sequence compared (a subject's best), None for two probes

    @property
    def match(self) -> bool | None:
        at = self.threshold.score
        return None if at is None else self.score >= at

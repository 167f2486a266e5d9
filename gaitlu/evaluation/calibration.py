"""Score calibration: how often someone who is *not* the person compared scores at least s (the false
accept rate, FAR), measured with the service's own scoring on labelled people the model has not seen.

Scores are what the galleries report: the mean per-part cosine of per-part-normalised embeddings
(`gaitlu.embedding`), optionally after centring (subtracting a reference mean, then normalising again).
Two comparisons are calibrated, because they are different scores:

- `sequence`: one sequence against one other sequence (POST /verify with two sequences);
- `subject`: a probe against one enrolled subject, scored by that subject's best enrolled sequence, as
  /search ranks subjects (top_m = 1) and /verify scores a probe against a subject. Every subject's
  sequences are split into `enrolled_per_subject` enrolled ones and probes; each probe is compared with
  every subject. Its FAR is per comparison: in a gallery of N other people, the chance that some one of
  them passes a threshold is about N x FAR.

The result is a `gaitlu.manifest.Calibration`: score -> FAR tables (log-spaced FAR levels down to one
impostor comparison) and thresholds at FAR 1e-2, 1e-3 and 1e-4, with the data set's name and size.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from gaitlu.embedding import centre_parts, normalise_parts
from gaitlu.errors import DataError
from gaitlu.evaluation.embeddings import EmbeddingSet
from gaitlu.evaluation.verification import PairScores, Rates, equal_error_rate
from gaitlu.manifest import Calibration, Centring, FarTable, Threshold

logger = logging.getLogger(__name__)

FARS = (1e-2, 1e-3, 1e-4)
TABLE_LEVELS = 241  # FAR levels of a table, log-spaced from one impostor comparison to all of them
BLOCK_ROWS = 512  # probe rows scored at once: bounds the (rows, N) score block
SUPPORTED_COUNT = 10  # a threshold is measured (not extrapolated) when >= this many impostors lie above


def service_vectors(emb: np.ndarray, centre: np.ndarray | None = None) -> np.ndarray:
    """(N, P, C) model output -> what the service scores: per-part L2, or (with a (P, C) `centre`) centred
    parts (`gaitlu.embedding.centre_parts`). float32."""
    emb = np.asarray(emb, np.float32)
    vectors = normalise_parts(emb) if centre is None else centre_parts(emb, centre)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def reference_centre(vectors: np.ndarray) -> np.ndarray:
    """(N, P, C) per-part-normalised vectors -> their (P, C) mean: the direction every embedding shares."""
    centre: np.ndarray = np.asarray(vectors, np.float64).mean(axis=0).astype(np.float32)
    return centre


def score_blocks(a: np.ndarray, b: np.ndarray) -> list[tuple[slice, np.ndarray]]:
    """(Na, P, C) x (Nb, P, C) unit-part vectors -> [(rows of a, (rows, Nb) mean per-part cosines)]."""
    parts = a.shape[1]
    flat_b = b.reshape(len(b), -1)  # (Nb, P*C): inner product / P = mean per-part cosine
    blocks = []
    for start in range(0, len(a), BLOCK_ROWS):
        rows = slice(start, min(start + BLOCK_ROWS, len(a)))
        blocks.append((rows, a[rows].reshape(rows.stop - rows.start, -1) @ flat_b.T / parts))
    return blocks


def sequence_scores(vectors: np.ndarray, subjects: np.ndarray) -> PairScores:
    """Every unordered pair of distinct sequences: genuine (same subject) and impostor scores."""
    genuine, impostor = [], []
    for rows, scores in score_blocks(vectors, vectors):
        index = np.arange(rows.start, rows.stop)[:, None]  # (B, 1)
        later = np.arange(len(vectors))[None, :] > index  # (B, N): each pair once, never a sequence itself
        same = subjects[rows, None] == subjects[None, :]
        genuine.append(scores[later & same])
        impostor.append(scores[later & ~same])
    return _checked(PairScores(np.concatenate(genuine), np.concatenate(impostor)), "sequence")


@dataclass(frozen=True)
class SubjectSplit:
    """Which sequences are enrolled and which probe, per subject (indices into the labelled set)."""

    enrolled: np.ndarray  # (E,) indices
    probes: np.ndarray  # (Q,) indices


def split_subjects(subjects: np.ndarray, enrolled_per_subject: int, seed: int = 0) -> SubjectSplit:
    """Per subject, `enrolled_per_subject` sequences chosen at random (seeded) are enrolled and the rest
    probe; subjects with too few sequences to have a probe are left out (logged)."""
    if enrolled_per_subject < 1:
        raise ValueError(f"enrolled_per_subject must be >= 1, got {enrolled_per_subject}")
    rng = np.random.default_rng(seed)
    enrolled, probes, short = [], [], []
    for subject in np.unique(subjects):
        rows = rng.permutation(np.flatnonzero(subjects == subject))
        if len(rows) <= enrolled_per_subject:
            short.append(str(subject))
            continue
        enrolled.append(rows[:enrolled_per_subject])
        probes.append(rows[enrolled_per_subject:])
    if short:
        logger.warning(
            "%d subject(s) have at most %d sequences and no probe left: not used for subject scores",
            len(short),
            enrolled_per_subject,
        )
    if len(enrolled) < 2:
        raise DataError(
            f"subject scores need at least 2 subjects with more than {enrolled_per_subject} sequences each"
        )
    return SubjectSplit(np.sort(np.concatenate(enrolled)), np.sort(np.concatenate(probes)))


@dataclass(frozen=True)
class SubjectComparisons:
    """Every probe against every enrolled subject: `best` (Q, S) is the subject's best enrolled
    sequence's score, `own` (Q,) the column of the probe's own subject."""

    best: np.ndarray
    own: np.ndarray

    def scores(self) -> PairScores:
        mine = np.zeros(self.best.shape, dtype=bool)
        mine[np.arange(len(mine)), self.own] = True
        return _checked(PairScores(self.best[mine], self.best[~mine]), "subject")

    def rank1(self) -> float:
        """% of probes whose own subject scores highest (ties count against it)."""
        own = self.best[np.arange(len(self.best)), self.own]
        others = np.where(np.eye(self.best.shape[1], dtype=bool)[self.own], -np.inf, self.best)
        return 100.0 * float((own > others.max(axis=1)).mean())


def subject_comparisons(vectors: np.ndarray, subjects: np.ndarray, split: SubjectSplit) -> SubjectComparisons:
    """Each probe against each enrolled subject, scored by that subject's best enrolled sequence."""
    order = split.enrolled[np.argsort(subjects[split.enrolled], kind="stable")]  # enrolled, by subject
    names, starts = np.unique(subjects[order], return_index=True)  # (S,): where each subject begins
    best = np.empty((len(split.probes), len(names)), np.float32)  # (Q, S)
    for rows, scores in score_blocks(vectors[split.probes], vectors[order]):  # (B, E)
        best[rows] = np.maximum.reduceat(scores, starts, axis=1)  # per subject: its best sequence
    return SubjectComparisons(best, np.searchsorted(names, subjects[split.probes]))


def _checked(scores: PairScores, what: str) -> PairScores:
    if len(scores.genuine) == 0 or len(scores.impostor) == 0:
        raise DataError(f"{what} scores need at least one genuine and one impostor comparison")
    return scores


def far_table(scores: PairScores, comparison: str, fars: tuple[float, ...] = FARS) -> FarTable:
    """The score -> FAR table and thresholds of one comparison's genuine and impostor scores."""
    rates = Rates(scores)
    n = len(rates.impostor)
    counts = np.ceil(np.logspace(0, np.log10(n), TABLE_LEVELS)).astype(np.int64)
    levels = np.unique(np.clip(counts, 1, n))  # impostor counts 1..n, log-spaced
    points = {round(float(rates.impostor[n - count]), 6) for count in levels}  # the count-th highest
    thresholds = [_threshold(rates, far) for far in fars]
    points |= {t.score for t in thresholds}
    table_scores = np.array(sorted(points))  # ascending
    return FarTable(
        comparison=comparison,  # type: ignore[arg-type]
        genuine=len(rates.genuine),
        impostors=n,
        eer=round(equal_error_rate(scores), 4),
        scores=[float(s) for s in table_scores],
        fars=[max(float(f), 1.0 / n) for f in rates.far(table_scores)],  # 0 seen: "at most 1/n"
        thresholds=thresholds,
    )


def _threshold(rates: Rates, far: float) -> Threshold:
    score = rates.threshold(far)
    return Threshold(
        far=far,
        score=score,
        observed_far=float(rates.far(score)),
        tar=float(rates.tar(score)),
        supported=far * len(rates.impostor) >= SUPPORTED_COUNT,
    )


def encode_centre(centre: np.ndarray, reference: str, sequences: int) -> Centring:
    """A (P, C) centre as the manifest records it (little-endian float32, base64)."""
    parts, part_dim = centre.shape
    data = base64.b64encode(np.ascontiguousarray(centre, "<f4").tobytes()).decode("ascii")
    return Centring(mean_b64=data, parts=parts, part_dim=part_dim, reference=reference, sequences=sequences)


def decode_centre(centring: Centring) -> np.ndarray:
    """The manifest's centring as a (P, C) float32 array."""
    raw = np.frombuffer(base64.b64decode(centring.mean_b64), "<f4")
    return raw.reshape(centring.parts, centring.part_dim).astype(np.float32)


def calibrate(
    data: EmbeddingSet,
    dataset: str,
    enrolled_per_subject: int,
    centre: np.ndarray | None = None,
    seed: int = 0,
) -> Calibration:
    """Calibrate the scores of a labelled set's model output (`data.emb`, (N, P, C)), centred by `centre`
    when given (the centre itself is recorded by the caller, in the manifest's indexing step)."""
    vectors = service_vectors(data.emb, centre)
    split = split_subjects(data.subject, enrolled_per_subject, seed)
    return Calibration(
        dataset=dataset,
        subjects=len(np.unique(data.subject)),
        sequences=len(data),
        enrolled_per_subject=enrolled_per_subject,
        centred=centre is not None,
        calibrated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        sequence=far_table(sequence_scores(vectors, data.subject), "sequence"),
        subject=far_table(subject_comparisons(vectors, data.subject, split).scores(), "subject"),
    )


@dataclass(frozen=True)
class CentringEffect:
    """Subject-level EER (%) and Rank-1 (%) on held-out subjects, without and with a centre computed on
    the other subjects: whether centring helps this model."""

    eer: tuple[float, float]  # (without, with)
    rank1: tuple[float, float]

    @property
    def helps(self) -> bool:
        """Lower EER by at least 5 % of itself and no lower Rank-1: worth a step in every embedding."""
        (eer_off, eer_on), (rank_off, rank_on) = self.eer, self.rank1
        return eer_on <= 0.95 * eer_off and rank_on >= rank_off


def centring_effect(data: EmbeddingSet, enrolled_per_subject: int, seed: int = 0) -> CentringEffect:
    """Split the subjects in two (seeded): the centre of one half, scored on the other half."""
    names = np.random.default_rng(seed).permutation(np.unique(data.subject))
    if len(names) < 4:
        raise DataError("measuring centring needs at least 4 subjects (2 for the centre, 2 to score)")
    reference = np.isin(data.subject, names[: len(names) // 2])
    centre = reference_centre(service_vectors(data.emb[reference]))
    held_out = data.select(~reference)
    split = split_subjects(held_out.subject, enrolled_per_subject, seed)
    eer, rank1 = [], []
    for c in (None, centre):
        comparisons = subject_comparisons(service_vectors(held_out.emb, c), held_out.subject, split)
        eer.append(equal_error_rate(comparisons.scores()))
        rank1.append(comparisons.rank1())
    return CentringEffect((eer[0], eer[1]), (rank1[0], rank1[1]))

"""Per-subject aggregation of sequence neighbours, and the loop that asks the index for enough of them.

A subject's score is the mean of its best `top_m` sequence scores (top_m = 1: its best sequence, the
default). Neighbours arrive best first, so a subject whose remaining sequences were not retrieved can
score at most the last retrieved score for each of them: the result is final once no such upper bound
can beat the k-th complete subject (or pass the threshold), or the index has nothing more to give.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from gallery.filters import SequenceAttributes


@dataclass(frozen=True)
class SearchHit:
    """One matching subject: score = mean per-part cosine in [-1, 1]; sequence_id = its best sequence;
    `attributes`: that sequence's filterable metadata (gallery.filters)."""

    subject_id: str
    score: float
    sequence_id: str
    attributes: SequenceAttributes = field(default_factory=SequenceAttributes)


def aggregate(
    scores: np.ndarray,
    ids: np.ndarray,
    sequences: Mapping[int, tuple[str, str]],
    subject_sizes: Mapping[str, int],
    k: int,
    top_m: int,
    threshold: float | None,
    exhausted: bool,
) -> list[SearchHit] | None:
    """Best-first neighbours (scores already / parts) -> the top-k subjects, or None if more are needed.

    `sequences` maps index id -> (subject_id, sequence_id); `subject_sizes` counts each subject's sequences.
    """
    per_subject: dict[str, list[tuple[float, str]]] = {}
    for score, index_id in zip(scores.tolist(), ids.tolist(), strict=True):
        entry = sequences.get(index_id)
        if entry is None:  # -1 padding
            continue
        subject_id, sequence_id = entry
        found = per_subject.setdefault(subject_id, [])
        if len(found) < top_m:
            found.append((score, sequence_id))
    floor = float(scores[ids >= 0][-1]) if (ids >= 0).any() else -1.0  # worst score retrieved
    complete, bounds = [], []
    for subject_id, found in per_subject.items():
        need = min(top_m, subject_sizes.get(subject_id, len(found)))
        total = sum(score for score, _ in found)
        if len(found) >= need or exhausted:
            complete.append(SearchHit(subject_id, total / len(found), found[0][1]))
        else:
            bounds.append((total + (need - len(found)) * floor) / need)
    complete.sort(key=lambda hit: (-hit.score, hit.subject_id))
    if threshold is not None:
        complete = [hit for hit in complete if hit.score >= threshold]
    hits = complete[:k]
    if exhausted:
        return hits
    # Unseen subjects score at most `floor`; partly seen ones at most their bound.
    bar = hits[-1].score if len(hits) == k else (threshold if threshold is not None else None)
    best_unfinished = max([floor, *bounds])
    if bar is None or best_unfinished > bar:
        return None
    return hits


def search_subjects(
    index_search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    queries: np.ndarray,
    ntotal: int,
    parts: int,
    sequences: Mapping[int, tuple[str, str]],
    subject_sizes: Mapping[str, int],
    k: int,
    top_m: int,
    threshold: float | None,
) -> list[list[SearchHit]]:
    """(q, D) queries -> top-k subjects each, widening the neighbour count k' until every row is final."""
    results: list[list[SearchHit] | None] = [None] * len(queries)
    if ntotal == 0:
        return [[] for _ in queries]
    per_subject = max(1.0, ntotal / max(1, len(subject_sizes)))
    wanted = min(ntotal, max(16, int(2 * k * top_m * per_subject)))
    pending = np.arange(len(queries))
    while len(pending):
        scores, ids = index_search(queries[pending], wanted)
        # inner product / parts = mean per-part cosine; clipped: quantised codes can overshoot slightly
        scores = np.clip(scores / parts, -1.0, 1.0)
        still = []
        for row, query in enumerate(pending):
            # Fewer than asked (-1 padding) means an approximate index has nothing more in reach.
            exhausted = wanted >= ntotal or bool((ids[row] < 0).any())
            hits = aggregate(scores[row], ids[row], sequences, subject_sizes, k, top_m, threshold, exhausted)
            if hits is None:
                still.append(query)
            else:
                results[query] = hits
        pending = np.asarray(still, dtype=np.int64)
        wanted = min(ntotal, wanted * 4)
    return results  # type: ignore[return-value]

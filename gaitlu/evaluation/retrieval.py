"""Ranked-retrieval metrics over a whole gallery: the Gait3D and GREW protocols.

Each probe ranks every gallery sequence by distance (stable sort: tied sequences keep gallery order).
From the ranked boolean match rows we compute CMC at given ranks, average precision (AP) and the inverse
negative penalty (INP = number of true matches / rank of the last true match, Zheng et al. TPAMI 2021),
as OpenGait's Gait3D evaluation does. mAP and mINP average over probes that have at least one true match.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gaitlu.errors import ConfigError, DataError
from gaitlu.evaluation.distance import iter_distance_blocks, stable_order
from gaitlu.evaluation.embeddings import EmbeddingSet
from gaitlu.evaluation.stats import json_number
from gaitlu.files import atomic_write

GREW_TOP_K = 20
GREW_RANKS = (1, 5, 10, 20)
GAIT3D_RANKS = (1, 5, 10)


def hits_at_ranks(matches: np.ndarray, ranks: tuple[int, ...]) -> np.ndarray:
    """(B, len(ranks)) bool: a true match within the first k of each ranked row (k clipped to G)."""
    first_k = np.cumsum(matches, axis=1) > 0  # (B, G)
    return first_k[:, [min(k, matches.shape[1]) - 1 for k in ranks]]


def average_precision(matches: np.ndarray) -> np.ndarray:
    """(B,) AP of each ranked match row; NaN for a row without any match."""
    cum = np.cumsum(matches, axis=1)  # (B, G)
    precision = cum / np.arange(1, matches.shape[1] + 1)
    num_rel = cum[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(num_rel > 0, (precision * matches).sum(axis=1) / num_rel, np.nan)


def inverse_negative_penalty(matches: np.ndarray) -> np.ndarray:
    """(B,) INP = matches / 1-based rank of the last match; NaN for a row without any match."""
    num_rel = matches.sum(axis=1)
    last_rank = matches.shape[1] - np.argmax(matches[:, ::-1], axis=1)  # 1-based rank of the last True
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(num_rel > 0, num_rel / last_rank, np.nan)


@dataclass(frozen=True)
class RetrievalReport:
    """Rank-k (%), mAP and mINP (%) over `num_probes` probes; `num_skipped` had no true match."""

    metrics: dict[str, float]
    num_probes: int
    num_skipped: int

    def headline(self) -> dict[str, float]:
        return dict(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        return {
            "headline": {name: json_number(x) for name, x in self.metrics.items()},
            "num_probes": self.num_probes,
            "num_skipped": self.num_skipped,
        }


def retrieval_scores(
    probe: EmbeddingSet,
    gallery: EmbeddingSet,
    metric: str,
    ranks: tuple[int, ...],
    skip_unmatched: bool,
    rank_decimals: int | None = None,
) -> RetrievalReport:
    """Rank-k, mAP, mINP. `skip_unmatched` drops probes without a true match from Rank-k (Gait3D);
    otherwise they count as misses (GREW's local variant, as in OpenGait). `rank_decimals` rounds Rank-k
    (%) as OpenGait's real-scene evaluator does (2 for GREW)."""
    if len(probe) == 0 or len(gallery) == 0:
        raise DataError(f"no probes ({len(probe)}) or no gallery ({len(gallery)}) sequences to evaluate")
    # Integer subject codes: comparing (B, G) ints is cheaper than comparing (B, G) strings.
    _, codes = np.unique(np.concatenate([probe.subject, gallery.subject]), return_inverse=True)
    probe_code, gallery_code = codes[: len(probe)], codes[len(probe) :]
    hits, ap, inp = [], [], []
    for block, dist in iter_distance_blocks(probe.emb, gallery.emb, metric):
        matches = gallery_code[stable_order(dist)] == probe_code[block, None]  # (B, G)
        hits.append(hits_at_ranks(matches, ranks))
        ap.append(average_precision(matches))
        inp.append(inverse_negative_penalty(matches))
    hits_all, ap_all, inp_all = np.concatenate(hits), np.concatenate(ap), np.concatenate(inp)
    matched = ~np.isnan(ap_all)
    if not matched.any():
        raise DataError("no probe has a true match in the gallery: check the partition and the dataset")
    counted = hits_all[matched] if skip_unmatched else hits_all
    metrics = {f"Rank-{k}": 100.0 * float(counted[:, i].mean()) for i, k in enumerate(ranks)}
    if rank_decimals is not None:
        metrics = {name: float(np.round(value, rank_decimals)) for name, value in metrics.items()}
    metrics["mAP"] = 100.0 * float(ap_all[matched].mean())
    metrics["mINP"] = 100.0 * float(inp_all[matched].mean())
    num_skipped = int((~matched).sum()) if skip_unmatched else 0
    return RetrievalReport(metrics, len(counted), num_skipped)


def gait3d(data: EmbeddingSet, probe_keys: tuple[str, ...] | None, metric: str = "cos") -> RetrievalReport:
    """Gait3D: sequences whose `subject-cond-view` key is in PROBE_SET are probes, the rest gallery."""
    if not probe_keys:
        raise ConfigError("the gait3d protocol needs a partition with a non-empty PROBE_SET")
    is_probe = np.isin(data.key, probe_keys)
    if not is_probe.any():
        raise DataError("none of the PROBE_SET sequences was found in the dataset")
    return retrieval_scores(data.select(is_probe), data.select(~is_probe), metric, GAIT3D_RANKS, True)


def top_gallery_ids(probe: EmbeddingSet, gallery: EmbeddingSet, metric: str, k: int) -> np.ndarray:
    """(N_probe, min(k, G)) subject ids of each probe's k nearest gallery sequences (ids may repeat)."""
    k = min(k, len(gallery))
    blocks = iter_distance_blocks(probe.emb, gallery.emb, metric)
    rows = [gallery.subject[stable_order(dist)[:, :k]] for _, dist in blocks]
    return np.concatenate(rows) if rows else np.zeros((0, k), dtype=str)


def _csv_id(subject: str) -> str:
    # OpenGait writes GREW ids as integers ("00017" -> "17"); non-numeric ids are written as they are.
    return str(int(subject)) if subject.isdigit() else subject


def write_grew_submission(path: str | Path, video_ids: np.ndarray, ranked_ids: np.ndarray) -> None:
    """Write `videoId,rank1..rankK` rows (the GREW server format) atomically."""
    with atomic_write(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["videoId", *(f"rank{i + 1}" for i in range(ranked_ids.shape[1]))])
        for video, ids in zip(video_ids, ranked_ids, strict=True):
            writer.writerow([video, *(_csv_id(s) for s in ids)])


@dataclass(frozen=True)
class GrewReport:
    """The labelled local variant (gallery 01, probe 02) if present, and the submission file if written."""

    local: RetrievalReport | None
    submission: Path | None
    num_submitted: int

    def headline(self) -> dict[str, float]:
        return self.local.headline() if self.local else {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "headline": self.local.to_dict()["headline"] if self.local else {},
            "local": self.local.to_dict() if self.local else None,
            "submission": str(self.submission) if self.submission else None,
            "num_submitted": self.num_submitted,
        }


def grew(data: EmbeddingSet, submission: str | Path | None, metric: str = "euc") -> GrewReport:
    """GREW: local Rank-k with gallery 01 / probe 02; for unlabelled probes (condition 03, the view
    folder holding the videoId) the top-20 gallery ids (gallery 01 + 02) go to `submission`."""
    local = None
    if (data.cond == "02").any():
        probe, gallery = data.select(data.cond == "02"), data.select(data.cond == "01")
        local = retrieval_scores(probe, gallery, metric, GREW_RANKS, skip_unmatched=False, rank_decimals=2)
    official = data.cond == "03"
    written = None
    if official.any() and submission is not None:
        probe, gallery = data.select(official), data.select(np.isin(data.cond, ("01", "02")))
        if len(gallery) == 0:
            raise DataError("GREW probes (condition 03) found but no gallery sequences (conditions 01/02)")
        ranked = top_gallery_ids(probe, gallery, metric, GREW_TOP_K)
        write_grew_submission(submission, probe.view, ranked)
        written = Path(submission)
    if local is None and not official.any():
        raise DataError("no GREW probes found: expected condition 02 (local) or 03 (official) sequences")
    return GrewReport(local, written, int(official.sum()) if written else 0)

"""Cross-view Rank-1 matrices: the CASIA-B and OU-MVLP protocols.

For each probe condition and each (probe view, gallery view) pair the gallery is restricted to that
view and each probe takes its nearest neighbour: Rank-1 (%), rounded to 2 decimals as OpenGait's
evaluator rounds each cell before averaging, fills a V x V matrix. The headline is, per
probe view, the mean over the other gallery views ("excluding identical view"), then the mean over probe
views; the diagonal mean is reported too (docs/synthetic.md compares both with real CASIA-B).

Gaps: a cell with no probes or no gallery sequence is NaN and left out of every mean, so a missing view
lowers no figure (with full data the means equal OpenGait's, which has no such guard). A probe whose
subject has no sequence in the gallery view it is compared against still counts, as a miss, as in
OpenGait and published OU-MVLP figures.
Ties: the first nearest gallery sequence in gallery order wins (np.argmin), so results are reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from gaitlu.errors import DataError
from gaitlu.evaluation.distance import iter_distance_blocks
from gaitlu.evaluation.embeddings import EmbeddingSet
from gaitlu.evaluation.stats import json_number, nanmean

CASIA_B_GALLERY = ("nm-01", "nm-02", "nm-03", "nm-04")
CASIA_B_PROBES = {"NM": ("nm-05", "nm-06"), "BG": ("bg-01", "bg-02"), "CL": ("cl-01", "cl-02")}
OUMVLP_GALLERY = ("01",)
OUMVLP_PROBES = {"NM": ("00",)}


@dataclass(frozen=True)
class ViewMatrix:
    """Rank-1 (%) per (probe view, gallery view): rows are probe views; NaN marks an empty cell."""

    views: tuple[str, ...]
    rank1: np.ndarray  # (V, V)

    @property
    def per_view(self) -> np.ndarray:
        """(V,) mean over the gallery views other than the probe's own."""
        off_diagonal = self.rank1.copy()
        np.fill_diagonal(off_diagonal, np.nan)
        return nanmean(off_diagonal, axis=1)

    @property
    def mean(self) -> float:
        """The headline figure: the mean of `per_view` over probe views."""
        return nanmean(self.per_view)

    @property
    def diagonal_mean(self) -> float:
        return nanmean(np.diag(self.rank1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": json_number(self.mean),
            "diagonal_mean": json_number(self.diagonal_mean),
            "per_view": {v: json_number(x) for v, x in zip(self.views, self.per_view, strict=True)},
            "views": list(self.views),
            "rank1": [[json_number(x) for x in row] for row in self.rank1],
        }


@dataclass(frozen=True)
class CrossViewReport:
    """One ViewMatrix per probe condition (NM/BG/CL for CASIA-B, NM for OU-MVLP)."""

    conditions: dict[str, ViewMatrix]

    def headline(self) -> dict[str, float]:
        return {name: matrix.mean for name, matrix in self.conditions.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "headline": {name: json_number(x) for name, x in self.headline().items()},
            "conditions": {name: matrix.to_dict() for name, matrix in self.conditions.items()},
        }


def cross_view_rank1(
    probe: EmbeddingSet, gallery: EmbeddingSet, views: tuple[str, ...], metric: str = "euc"
) -> ViewMatrix:
    """Rank-1 (%) of nearest-neighbour matching for every (probe view, gallery view) pair."""
    rank1 = np.full((len(views), len(views)), np.nan)
    gallery_columns = [np.flatnonzero(gallery.view == v) for v in views]
    filled = np.array([len(cols) > 0 for cols in gallery_columns])
    for i, probe_view in enumerate(views):
        rows = probe.select(probe.view == probe_view)
        if len(rows) == 0:
            continue
        hits = np.zeros(len(views))
        for block, dist in iter_distance_blocks(rows.emb, gallery.emb, metric):
            for j, cols in enumerate(gallery_columns):
                if len(cols):
                    nearest = cols[np.argmin(dist[:, cols], axis=1)]  # (B,) first minimum wins ties
                    hits[j] += np.count_nonzero(gallery.subject[nearest] == rows.subject[block])
        rank1[i, filled] = np.round(100.0 * hits[filled] / len(rows), 2)  # OpenGait rounds each cell
    return ViewMatrix(views, rank1)


def condition_matrices(
    data: EmbeddingSet,
    gallery_conds: tuple[str, ...],
    probe_conds: Mapping[str, tuple[str, ...]],
    metric: str,
) -> CrossViewReport:
    """Split `data` into gallery and per-condition probes and build each condition's ViewMatrix."""
    gallery = data.select(np.isin(data.cond, gallery_conds))
    probe_all = list(chain.from_iterable(probe_conds.values()))
    if len(gallery) == 0 or not np.isin(data.cond, probe_all).any():
        raise DataError(
            f"no gallery ({', '.join(gallery_conds)}) or no probe ({', '.join(probe_all)}) sequences among "
            f"the {len(data)} test sequences: is this the right protocol for the dataset?"
        )
    used = np.isin(data.cond, [*gallery_conds, *probe_all])
    views = tuple(sorted(set(data.view[used])))
    return CrossViewReport(
        {
            name: cross_view_rank1(data.select(np.isin(data.cond, conds)), gallery, views, metric)
            for name, conds in probe_conds.items()
        }
    )


def casia_b(data: EmbeddingSet, metric: str = "euc") -> CrossViewReport:
    """CASIA-B: gallery nm-01..04; probes NM nm-05/06, BG bg-01/02, CL cl-01/02 (11 x 11 views)."""
    return condition_matrices(data, CASIA_B_GALLERY, CASIA_B_PROBES, metric)


def oumvlp(data: EmbeddingSet, metric: str = "euc") -> CrossViewReport:
    """OU-MVLP: gallery sequence 01, probe sequence 00 (14 x 14 views)."""
    return condition_matrices(data, OUMVLP_GALLERY, OUMVLP_PROBES, metric)

"""Same numbers as OpenGait: our protocol code against an independent reference of OpenGait's evaluator.

The reference below restates, in plain loops, what OpenGait's evaluation code computes
(opengait/evaluation/metric.py and evaluator.py): the distance averaged over parts
(`cuda_dist`: per part, Euclidean sqrt(relu(|x|^2 + |y|^2 - 2 x.y)) or cosine of the per-part
normalised features; summed over parts and divided by P), the single-view-gallery Rank-1 table with each
cell rounded to 2 decimals and the identical view excluded (`evaluate_indoor_dataset`, `de_diag`), the
Gait3D ranking (`evaluate_rank`: probes without a true match skipped, AP, INP) and GREW's local Rank-k
(`evaluate_real_scene`: every probe counts, rounded to 2 decimals). It runs in float64. Every decision
a score depends on (a true match against a wrong one) is checked to be decided by a margin 10 times the
difference between our float32 distances and these, so the results must agree exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from gaitlu.evaluation.distance import pairwise_distances
from gaitlu.evaluation.embeddings import EmbeddingSet
from gaitlu.evaluation.protocols import evaluate
from gaitlu.labelled import Partition

CASIA_GALLERY = ("nm-01", "nm-02", "nm-03", "nm-04")
CASIA_PROBES = {"NM": ("nm-05", "nm-06"), "BG": ("bg-01", "bg-02"), "CL": ("cl-01", "cl-02")}
VIEWS = ("000", "018", "036", "054")


def reference_distance(x: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
    """OpenGait's cuda_dist on (N, C, P) features, in float64."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    if metric == "cos":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        y = y / np.linalg.norm(y, axis=1, keepdims=True)
    total = np.zeros((len(x), len(y)))
    for p in range(x.shape[2]):
        a, b = x[:, :, p], y[:, :, p]
        if metric == "cos":
            total += a @ b.T
        else:
            sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
            total += np.sqrt(np.maximum(sq, 0))
    return 1 - total / x.shape[2] if metric == "cos" else total / x.shape[2]


def reference_distance_checked(x: np.ndarray, y: np.ndarray, same: np.ndarray, metric: str) -> np.ndarray:
    """The reference distances, after checking that no true-match / wrong-match comparison of a probe is
    closer than 10x the largest difference from our float32 distances (`same`: (N, G) true matches)."""
    dist = reference_distance(x, y, metric)
    error = np.abs(pairwise_distances(x.transpose(0, 2, 1), y.transpose(0, 2, 1), metric) - dist).max()
    for row, match in zip(dist, same, strict=True):
        if match.any() and (~match).any():
            margin = np.abs(row[match][:, None] - row[~match][None, :]).min()
            assert margin > 10 * error, (
                f"a decision within {margin:.2e} (error {error:.2e}): pick another seed"
            )
    return dist


def reference_cross_view(data: dict, gallery: tuple, probes: dict, metric: str) -> dict[str, float]:
    """OpenGait's single_view_gallery_evaluation + de_diag: per-condition mean Rank-1 (%)."""
    feat, label, cond, view = data["feat"], data["label"], data["cond"], data["view"]
    views = sorted(set(view))
    results = {}
    for name, probe_conds in probes.items():
        acc = np.zeros((len(views), len(views)))
        for i, probe_view in enumerate(views):
            p = np.isin(cond, probe_conds) & (view == probe_view)
            for j, gallery_view in enumerate(views):
                g = np.isin(cond, gallery) & (view == gallery_view)
                same = label[p][:, None] == label[g][None, :]
                dist = reference_distance_checked(feat[p], feat[g], same, metric)
                nearest = label[g][np.argsort(dist, axis=1)[:, 0]]
                acc[i, j] = np.round(np.sum(nearest == label[p]) * 100 / len(dist), 2)
        per_view = np.sum(acc - np.diag(np.diag(acc)), 1) / (len(views) - 1)
        results[name] = float(np.mean(per_view))
    return results


def reference_gait3d(probe: dict, gallery: dict, metric: str) -> dict[str, float]:
    """OpenGait's evaluate_Gait3D / evaluate_rank."""
    same = probe["label"][:, None] == gallery["label"][None, :]
    dist = reference_distance_checked(probe["feat"], gallery["feat"], same, metric)
    matches = gallery["label"][np.argsort(dist, axis=1)] == probe["label"][:, None]
    cmc, aps, inps = [], [], []
    for row in matches:
        if not row.any():
            continue  # the probe's subject is not in the gallery
        hits = np.cumsum(row)
        last = np.flatnonzero(row).max()
        inps.append(hits[last] / (last + 1))
        cmc.append(np.minimum(hits, 1))
        aps.append(np.sum(hits / np.arange(1, len(row) + 1) * row) / row.sum())
    curve = np.sum(cmc, axis=0) / len(cmc)
    return {"Rank-1": curve[0] * 100, "Rank-5": curve[4] * 100, "Rank-10": curve[9] * 100,
            "mAP": np.mean(aps) * 100, "mINP": np.mean(inps) * 100}  # fmt: skip


def reference_grew(probe: dict, gallery: dict, metric: str) -> dict[str, float]:
    """OpenGait's evaluate_real_scene for GREW: Rank-k over all probes, rounded to 2 decimals."""
    same = probe["label"][:, None] == gallery["label"][None, :]
    dist = reference_distance_checked(probe["feat"], gallery["feat"], same, metric)
    ranked = gallery["label"][np.argsort(dist, axis=1)[:, :20]]
    acc = np.round(np.sum(np.cumsum(ranked == probe["label"][:, None], 1) > 0, 0) * 100 / len(dist), 2)
    return {f"Rank-{k}": float(acc[k - 1]) for k in (1, 5, 10, 20)}


def draw(
    rng: np.random.Generator, labels: np.ndarray, noise: float, parts: int = 4, dim: int = 8
) -> np.ndarray:
    """(N, C, P) features: a subject code plus per-sequence noise, so the scores are neither 0 nor 100."""
    codes = {s: rng.normal(size=(dim, parts)) for s in np.unique(labels)}
    return np.stack([codes[s] + noise * rng.normal(size=(dim, parts)) for s in labels]).astype(np.float32)


def as_set(data: dict) -> EmbeddingSet:
    return EmbeddingSet(
        data["feat"].transpose(0, 2, 1), data["label"], data["cond"], data["view"]
    )  # (N, P, C)


@pytest.mark.parametrize("metric", ["euc", "cos"])
@pytest.mark.parametrize("protocol", ["casia-b", "oumvlp"])
def test_cross_view_tables_equal_opengait(protocol: str, metric: str) -> None:
    rng = np.random.default_rng(7)
    gallery, probes = (CASIA_GALLERY, CASIA_PROBES) if protocol == "casia-b" else (("01",), {"NM": ("00",)})
    conds = [*gallery, *(c for group in probes.values() for c in group)]
    grid = [(f"{s:03d}", c, v) for s in range(75, 87) for c in conds for v in VIEWS]
    label, cond, view = (np.array(column) for column in zip(*grid, strict=True))
    data = {"feat": draw(rng, label, noise=1.1), "label": label, "cond": cond, "view": view}
    ours = evaluate(as_set(data), protocol, metric).headline()
    expected = reference_cross_view(data, gallery, probes, metric)
    assert ours == expected
    assert all(5 < value < 95 for value in ours.values())  # informative scores, not a trivial 0 or 100


@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_gait3d_equals_opengait(metric: str) -> None:
    rng = np.random.default_rng(3)
    label = np.array([*np.repeat([f"{s:04d}" for s in range(30)], 4), "9999"])  # 9999: one sequence only
    cond = np.array([f"cam{i % 4}" for i in range(len(label))])
    view = np.array([f"seq{i:03d}" for i in range(len(label))])
    is_probe = (np.arange(len(label)) % 4 == 0) | (label == "9999")  # 9999 has no gallery: skipped
    data = {"feat": draw(rng, label, noise=1.8), "label": label, "cond": cond, "view": view}
    keys = tuple(
        f"{s}-{c}-{v}" for s, c, v in zip(label[is_probe], cond[is_probe], view[is_probe], strict=True)
    )
    report = evaluate(as_set(data), "gait3d", metric, Partition(train=(), test=tuple(label), probe=keys))
    split = {
        name: {k: v[mask] for k, v in data.items()} for name, mask in (("p", is_probe), ("g", ~is_probe))
    }
    expected = reference_gait3d(split["p"], split["g"], metric)
    assert report.num_skipped == 1
    ours = report.headline()
    assert ours == expected
    assert 5 < ours["Rank-1"] < 95


@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_grew_local_equals_opengait(metric: str) -> None:
    rng = np.random.default_rng(11)
    label = np.repeat([f"{s:05d}" for s in range(40)], 3)
    cond = np.tile(["01", "01", "02"], 40)
    cond[-1] = "01"  # subject 39 has no probe; subject 38's probe below has no gallery sequence
    label[-4] = "77777"
    view = np.array([f"{i:04d}" for i in range(len(label))])
    data = {"feat": draw(rng, label, noise=1.2), "label": label, "cond": cond, "view": view}
    report = evaluate(as_set(data), "grew", metric)
    split = {name: {k: v[cond == name] for k, v in data.items()} for name in ("01", "02")}
    expected = reference_grew(split["02"], split["01"], metric)
    ours = report.headline()
    assert {k: ours[k] for k in expected} == expected

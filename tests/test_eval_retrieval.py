"""Gait3D (Rank-k, mAP, mINP) and GREW (local Rank-k, submission CSV) against hand-computed cases."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from gaitlu.errors import ConfigError, DataError
from gaitlu.evaluation.embeddings import EmbeddingSet
from gaitlu.evaluation.protocols import evaluate
from gaitlu.evaluation.retrieval import (
    average_precision,
    gait3d,
    grew,
    hits_at_ranks,
    inverse_negative_penalty,
)
from gaitlu.labelled import Partition


def at_angles(degrees: list[float]) -> np.ndarray:
    """Unit 2-D vectors: cosine distance grows with the angle between them."""
    rad = np.deg2rad(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)  # (N, 2)


def test_ap_and_inp_of_ranked_match_rows_by_hand() -> None:
    matches = np.array([[0, 1, 0, 1, 0], [1, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=bool)
    # AP: (1/2 + 2/4) / 2 = 0.5 and (1/1 + 2/5) / 2 = 0.7; INP: 2/4 and 2/5; no match -> NaN.
    np.testing.assert_allclose(average_precision(matches), [0.5, 0.7, np.nan])
    np.testing.assert_allclose(inverse_negative_penalty(matches), [0.5, 0.4, np.nan])
    np.testing.assert_array_equal(hits_at_ranks(matches, (1, 2, 10)), [[0, 1, 1], [1, 1, 1], [0, 0, 0]])


def gait3d_case() -> tuple[EmbeddingSet, tuple[str, ...]]:
    """Gallery B, A, y, A, B at 10..50 degrees; probe A at 0 (ranks 2 and 4), probe B at 180 (ranks 1 and
    5 once reversed), probe C at 90 (no C in the gallery: skipped)."""
    subjects = ["B", "A", "y", "A", "B", "A", "B", "C"]
    emb = at_angles([10, 20, 30, 40, 50, 0, 180, 90])
    views = [f"v{i}" for i in range(8)]
    data = EmbeddingSet(emb, np.array(subjects), np.full(8, "cam"), np.array(views))
    return data, ("A-cam-v5", "B-cam-v6", "C-cam-v7")


def test_gait3d_metrics_match_the_hand_computation() -> None:
    data, probe_keys = gait3d_case()
    report = gait3d(data, probe_keys)
    assert report.num_probes == 2 and report.num_skipped == 1
    assert report.metrics == pytest.approx(
        {"Rank-1": 50.0, "Rank-5": 100.0, "Rank-10": 100.0, "mAP": 60.0, "mINP": 45.0}
    )


def test_gait3d_defaults_to_cosine_through_the_dispatcher() -> None:
    data, probe_keys = gait3d_case()
    scaled = EmbeddingSet(data.emb * np.arange(1, 9)[:, None, None], data.subject, data.cond, data.view)
    report = evaluate(scaled, "gait3d", partition=Partition((), ("A", "B", "C", "y"), probe_keys))
    assert report.metrics["mAP"] == pytest.approx(60.0)  # cosine: the lengths changed nothing


def test_gait3d_needs_a_probe_set() -> None:
    data, _ = gait3d_case()
    with pytest.raises(ConfigError, match="PROBE_SET"):
        gait3d(data, None)
    with pytest.raises(DataError, match="none of the PROBE_SET"):
        gait3d(data, ("Z-cam-v0",))


def grew_set(num_subjects: int, video_ids: list[str]) -> EmbeddingSet:
    """Gallery 01 and 02 for each subject (a one-hot code), plus unlabelled 03 probes of subjects 0, 1...
    whose videoId is their view folder."""
    code = np.eye(num_subjects)
    rows = [
        (code[i], f"{i + 1:05d}", cond, f"seq{cond}") for i in range(num_subjects) for cond in ("01", "02")
    ]
    rows += [(code[i] * 0.9, "probe", "03", vid) for i, vid in enumerate(video_ids)]
    emb, subject, cond, view = zip(*rows, strict=True)
    return EmbeddingSet(np.stack(emb), np.array(subject), np.array(cond), np.array(view))


def test_grew_local_variant_and_submission_csv(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "grew.csv"
    report = grew(grew_set(25, ["vidA", "vidB"]), out)
    assert report.local is not None and report.local.metrics["Rank-1"] == 100.0
    assert set(report.local.metrics) >= {"Rank-1", "Rank-5", "Rank-10", "Rank-20"}
    assert report.submission == out and report.num_submitted == 2
    with out.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["videoId", *(f"rank{i}" for i in range(1, 21))]
    assert [r[0] for r in rows[1:]] == ["vidA", "vidB"]
    # Both gallery sequences (01 and 02) of the true subject come first; ids are written as integers.
    assert rows[1][1:3] == ["1", "1"] and rows[2][1:3] == ["2", "2"]
    assert all(len(r) == 21 for r in rows)


def test_grew_without_probes_is_a_data_error() -> None:
    data = grew_set(3, [])
    with pytest.raises(DataError, match="no GREW probes"):
        grew(data.select(data.cond == "01"), None)


def test_dispatcher_rejects_unknown_names() -> None:
    data, _ = gait3d_case()
    with pytest.raises(ConfigError, match="unknown protocol"):
        evaluate(data, "casia-c")
    with pytest.raises(ConfigError, match="unknown metric"):
        evaluate(data, "casia-b", metric="l1")

"""EER and TAR@FAR on score sets whose answer is known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from gaitlu.errors import DataError
from gaitlu.evaluation.embeddings import EmbeddingSet
from gaitlu.evaluation.verification import PairScores, equal_error_rate, pair_scores, tar_at_far, verification


def test_separable_scores_have_zero_eer_and_full_tar():
    scores = PairScores(np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert equal_error_rate(scores) == 0.0
    assert tar_at_far(scores, 0.01) == 100.0


def test_overlapping_scores():
    # Genuine 2..11, impostor 0.5..9.5: accepting >= 6 lets 4 of 10 impostors in (6.5..9.5) and keeps
    # 4 of 10 genuines out (2..5): the two rates meet at 40 %.
    scores = PairScores(np.arange(2.0, 12.0), np.arange(0.5, 10.0))
    assert equal_error_rate(scores) == pytest.approx(40.0)
    # FAR <= 10 %: the loosest such threshold is 9 (only impostor 9.5 above it): genuines 9, 10, 11.
    assert tar_at_far(scores, 0.1) == pytest.approx(30.0)
    # FAR 0 (nothing looser exists with ten impostors): accept >= 10, genuines 10 and 11.
    assert tar_at_far(scores, 1e-3) == pytest.approx(20.0)
    report = verification(scores, (0.1,))
    assert report.genuine_pairs == 10 and report.impostor_pairs == 10
    assert report.headline() == {"EER": pytest.approx(40.0), "TAR@FAR=0.1": pytest.approx(30.0)}


def test_eer_interpolates_between_thresholds():
    # Descending thresholds 4, 3, 2, 1: (FAR, FRR) = (0, 2/3), (0, 1/3), (1/2, 1/3), (1, 0). FAR - FRR
    # goes from -1/3 to +1/6 between thresholds 3 and 2; interpolating FAR there: 0 + (2/3) * 1/2.
    scores = PairScores(np.array([1.0, 3.0, 4.0]), np.array([1.0, 2.0]))
    assert equal_error_rate(scores) == pytest.approx(100.0 / 3.0)


def test_identical_scores_are_chance():
    scores = PairScores(np.zeros(100), np.zeros(100))
    assert equal_error_rate(scores) == pytest.approx(50.0)


def test_pairs_are_cross_view_and_split_by_subject():
    emb = np.array([[0.0], [1.0], [10.0], [11.0]], np.float32)  # (4, 1): two subjects, two views each
    data = EmbeddingSet(emb, np.array(["a", "a", "b", "b"]), np.array(["nm"] * 4), np.array(["0", "1"] * 2))
    scores = pair_scores(data, data, "euc")
    assert sorted(scores.genuine) == [-1.0] * 4  # a0-a1, a1-a0, b0-b1, b1-b0: only cross-view pairs
    assert sorted(scores.impostor) == [-11.0, -11.0, -9.0, -9.0]
    same_view = pair_scores(data, data, "euc", cross_view=False)
    assert len(same_view.genuine) == 8 and len(same_view.impostor) == 8


def test_no_pairs_is_a_clear_error():
    data = EmbeddingSet(
        np.zeros((2, 1), np.float32), np.array(["a", "a"]), np.array(["nm"] * 2), np.array(["0", "1"])
    )
    with pytest.raises(DataError, match="impostor"):
        pair_scores(data, data)

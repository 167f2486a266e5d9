"""CASIA-B and OU-MVLP cross-view Rank-1 on hand-made embeddings whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from gaitlu.errors import DataError
from gaitlu.evaluation.crossview import ViewMatrix, casia_b, oumvlp
from gaitlu.evaluation.embeddings import EmbeddingSet

CASIA_VIEWS = tuple(f"{18 * i:03d}" for i in range(11))
CASIA_CONDS = ("nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02")
OUMVLP_VIEWS = (
    "000",
    "015",
    "030",
    "045",
    "060",
    "075",
    "090",
    "180",
    "195",
    "210",
    "225",
    "240",
    "255",
    "270",
)


def labelled_grid(
    num_subjects: int, conds: tuple[str, ...], views: tuple[str, ...]
) -> tuple[np.ndarray, ...]:
    """subject index, condition, view for every (subject, condition, view) of a full dataset."""
    s, c, v = np.meshgrid(
        np.arange(num_subjects), np.arange(len(conds)), np.arange(len(views)), indexing="ij"
    )
    return s.ravel(), c.ravel(), v.ravel()


def make_set(emb: np.ndarray, s: np.ndarray, c: np.ndarray, v: np.ndarray, conds, views) -> EmbeddingSet:
    return EmbeddingSet(emb, np.array([f"{75 + i:03d}" for i in s]), np.array(conds)[c], np.array(views)[v])


def subject_code(s: np.ndarray, num_subjects: int, noise: float, seed: int = 0) -> np.ndarray:
    """One-hot subject per part (3 parts) plus noise: identity is all an embedding holds."""
    rng = np.random.default_rng(seed)
    onehot = np.eye(num_subjects)[s]  # (N, S)
    return np.repeat(onehot[:, None, :], 3, axis=1) + noise * rng.normal(size=(len(s), 3, num_subjects))


def test_subject_encoding_scores_100_on_every_condition() -> None:
    s, c, v = labelled_grid(10, CASIA_CONDS, CASIA_VIEWS)
    report = casia_b(make_set(subject_code(s, 10, noise=0.05), s, c, v, CASIA_CONDS, CASIA_VIEWS))
    assert set(report.conditions) == {"NM", "BG", "CL"}
    for matrix in report.conditions.values():
        assert matrix.rank1.shape == (11, 11)
        np.testing.assert_array_equal(matrix.rank1, 100.0)
        assert matrix.mean == 100.0 and matrix.diagonal_mean == 100.0


def test_random_embeddings_score_about_chance() -> None:
    num_subjects = 50
    s, c, v = labelled_grid(num_subjects, CASIA_CONDS, CASIA_VIEWS)
    rng = np.random.default_rng(4)
    report = casia_b(make_set(rng.normal(size=(len(s), 2, 8)), s, c, v, CASIA_CONDS, CASIA_VIEWS))
    for name, matrix in report.conditions.items():
        # 11 000 probe decisions per condition: the mean is within 1 point of 2 % with ample margin.
        assert abs(matrix.mean - 100 / num_subjects) < 1.0, name


def test_view_dependent_embeddings_match_within_a_view_only() -> None:
    # Subject s seen from view v lights coordinate v*S + s: same view -> exact match, other views ->
    # all gallery sequences tie, and the first one in gallery order (subject 075) wins.
    num_subjects, views = 5, CASIA_VIEWS[:4]
    s, c, v = labelled_grid(num_subjects, CASIA_CONDS, views)
    emb = np.eye(len(views) * num_subjects)[v * num_subjects + s]
    matrix = casia_b(make_set(emb, s, c, v, CASIA_CONDS, views)).conditions["NM"]
    expected = np.full((4, 4), 100.0 / num_subjects)
    np.fill_diagonal(expected, 100.0)
    np.testing.assert_allclose(matrix.rank1, expected)
    assert matrix.diagonal_mean == 100.0
    assert matrix.mean == pytest.approx(20.0)


def test_missing_views_give_nan_cells_left_out_of_the_means() -> None:
    s, c, v = labelled_grid(6, CASIA_CONDS, CASIA_VIEWS)
    conds, views = np.array(CASIA_CONDS)[c], np.array(CASIA_VIEWS)[v]
    no_gallery_000 = np.isin(conds, ["nm-01", "nm-02", "nm-03", "nm-04"]) & (views == "000")
    no_nm_probe_018 = np.isin(conds, ["nm-05", "nm-06"]) & (views == "018")
    keep = ~(no_gallery_000 | no_nm_probe_018)
    data = make_set(subject_code(s, 6, noise=0.05), s, c, v, CASIA_CONDS, CASIA_VIEWS).select(keep)
    nm = casia_b(data).conditions["NM"]
    assert np.isnan(nm.rank1[:, 0]).all() and np.isnan(nm.rank1[1]).all()
    filled = np.ones((11, 11), dtype=bool)
    filled[:, 0] = filled[1] = False
    np.testing.assert_array_equal(nm.rank1[filled], 100.0)
    assert np.isnan(nm.per_view[1]) and nm.mean == 100.0
    assert casia_b(data).conditions["BG"].rank1[1, 1] == 100.0  # only NM lost its 018 probes


def test_view_matrix_means_by_hand() -> None:
    rank1 = np.array([[90.0, 10.0, 30.0], [np.nan, np.nan, np.nan], [50.0, np.nan, 70.0]])
    matrix = ViewMatrix(("a", "b", "c"), rank1)
    np.testing.assert_allclose(matrix.per_view, [20.0, np.nan, 50.0])
    assert matrix.mean == pytest.approx(35.0)
    assert matrix.diagonal_mean == pytest.approx(80.0)
    as_dict = matrix.to_dict()
    assert as_dict["per_view"]["b"] is None and as_dict["rank1"][2][1] is None


def test_probes_whose_subject_is_missing_from_a_gallery_view_count_as_misses() -> None:
    s, c, v = labelled_grid(4, CASIA_CONDS, CASIA_VIEWS[:2])
    data = make_set(subject_code(s, 4, noise=0.0), s, c, v, CASIA_CONDS, CASIA_VIEWS[:2])
    gallery = np.isin(data.cond, ["nm-01", "nm-02", "nm-03", "nm-04"])
    gallery_gone = gallery & (data.subject == "075") & (data.view == "018")  # 075 absent from gallery 018
    nm = casia_b(data.select(~gallery_gone)).conditions["NM"]
    assert nm.rank1[0, 1] == 75.0 and nm.rank1[1, 1] == 75.0 and nm.rank1[0, 0] == 100.0


def test_oumvlp_has_fourteen_views_and_uses_sequence_00_against_01() -> None:
    s, c, v = labelled_grid(8, ("00", "01"), OUMVLP_VIEWS)
    report = oumvlp(make_set(subject_code(s, 8, noise=0.05), s, c, v, ("00", "01"), OUMVLP_VIEWS))
    assert list(report.conditions) == ["NM"]
    matrix = report.conditions["NM"]
    assert matrix.views == OUMVLP_VIEWS and matrix.rank1.shape == (14, 14)
    assert matrix.mean == 100.0


def test_cross_view_ignores_sequences_of_other_conditions() -> None:
    s, c, v = labelled_grid(5, ("00", "01", "junk"), OUMVLP_VIEWS[:3])
    emb = subject_code(s, 5, noise=0.05)
    emb[c == 2] = 0.0  # junk sequences would be everyone's nearest neighbour if they entered the gallery
    report = oumvlp(make_set(emb, s, c, v, ("00", "01", "junk"), OUMVLP_VIEWS[:3]))
    assert report.conditions["NM"].mean == 100.0


def test_a_dataset_without_the_protocol_conditions_is_a_data_error() -> None:
    s, c, v = labelled_grid(3, CASIA_CONDS, CASIA_VIEWS[:2])
    data = make_set(subject_code(s, 3, noise=0.0), s, c, v, CASIA_CONDS, CASIA_VIEWS[:2])
    with pytest.raises(DataError, match="right protocol"):
        oumvlp(data)

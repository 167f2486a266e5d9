"""Score calibration: FAR tables and thresholds, the subject-level comparison /search reports, the
manifest's strict record of them, and `gaitlu calibrate` writing it without touching the model."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gaitlu.embedding import EmbeddingLayout, centre_parts, normalise_parts
from gaitlu.evaluation.calibration import (
    SubjectSplit,
    calibrate,
    decode_centre,
    encode_centre,
    far_table,
    sequence_scores,
    split_subjects,
    subject_comparisons,
)
from gaitlu.evaluation.embeddings import EmbeddingSet
from gaitlu.evaluation.verification import PairScores
from gaitlu.files import sha256_file
from gaitlu.manifest import ArtifactError, FarTable, read_manifest
from synth.layout import generate_opengait
from tests.support.cli import run_cli
from tests.support.embeddings import clustered_embeddings

LAYOUT = EmbeddingLayout(parts=4, part_dim=16)


def gaussian_scores(rng: np.random.Generator, n_impostor: int) -> PairScores:
    return PairScores(rng.normal(0.6, 0.1, 5_000), rng.normal(0.0, 0.15, n_impostor))


def test_thresholds_hold_their_far_on_the_calibration_set_and_on_new_comparisons():
    rng = np.random.default_rng(0)
    table = far_table(gaussian_scores(rng, 200_000), "sequence")
    fresh = rng.normal(0.0, 0.15, 2_000_000)  # new impostor comparisons from the same people
    for t in table.thresholds:
        assert t.observed_far <= t.far and t.supported
        assert t.far / 2 <= float((fresh >= t.score).mean()) <= 2 * t.far  # within 2x of nominal
        assert table.threshold(t.far) == t.score
        assert table.far(t.score) == pytest.approx(t.observed_far, rel=0.15)


def test_far_falls_with_the_score_and_the_threshold_inverts_it():
    table = far_table(gaussian_scores(np.random.default_rng(1), 50_000), "sequence")
    grid = np.linspace(-1, 1, 401)
    fars = [table.far(float(s)) for s in grid]
    assert all(b <= a for a, b in itertools.pairwise(fars))
    assert fars[0] == pytest.approx(1.0) and fars[-1] == table.far_floor == 1 / 50_000
    for far in (0.3, 5e-2, 2e-3, 3e-4):  # not a calibrated level: interpolated, and consistent both ways
        assert table.far(table.threshold(far)) == pytest.approx(far, rel=0.02)
    assert table.threshold(1e-9) > max(table.scores[:-1])  # beyond every impostor measured


def test_few_impostors_make_a_threshold_unsupported():
    table = far_table(gaussian_scores(np.random.default_rng(2), 5_000), "subject")
    supported = {t.far: t.supported for t in table.thresholds}
    assert supported == {1e-2: True, 1e-3: False, 1e-4: False}  # 50, 5, 0.5 impostors above


def test_subject_scores_take_each_subjects_best_enrolled_sequence():
    # two subjects, one part of two channels: x along the first axis, y along the second
    emb = np.array([[[1, 0]], [[0.8, 0.6]], [[0.6, 0.8]], [[0, 1]], [[0.96, 0.28]]], np.float32)
    subjects = np.array(["x", "x", "y", "y", "x"])
    split = SubjectSplit(enrolled=np.array([0, 1, 2, 3]), probes=np.array([4]))
    comparisons = subject_comparisons(normalise_parts(emb), subjects, split)
    # probe (0.96, 0.28) against x: best of 0.96, 0.936; against y: best of 0.8 (0.6, 0.8) and 0.28
    np.testing.assert_allclose(comparisons.best, [[0.96, 0.8]], atol=1e-6)
    scores = comparisons.scores()
    assert scores.genuine.tolist() == pytest.approx([0.96]) and scores.impostor.tolist() == pytest.approx(
        [0.8]
    )
    assert comparisons.rank1() == 100.0


def test_split_keeps_a_probe_per_subject_and_skips_subjects_without_one():
    subjects = np.array(["a"] * 5 + ["b"] * 2 + ["c"] * 3)
    split = split_subjects(subjects, 2, seed=3)
    assert sorted(subjects[split.enrolled]) == ["a", "a", "c", "c"]
    assert sorted(subjects[split.probes]) == ["a", "a", "a", "c"]
    assert not set(split.enrolled) & set(split.probes)


def test_sequence_pairs_are_each_unordered_pair_once():
    vectors, labels = clustered_embeddings(3, 4, LAYOUT, 0.5, np.random.default_rng(4))
    scores = sequence_scores(LAYOUT.unflatten(vectors), labels)
    assert len(scores.genuine) == 3 * 6 and len(scores.impostor) == 12 * 11 // 2 - 18


def test_a_calibration_round_trips_through_a_strict_manifest(tiny_artifact, tmp_path):
    vectors, labels = clustered_embeddings(12, 5, EmbeddingLayout(31, 64), 0.6, np.random.default_rng(5))
    data = EmbeddingSet(vectors.reshape(-1, 31, 64), labels.astype(str), ["nm"] * 60, ["090"] * 60)
    centre = normalise_parts(data.emb).mean(axis=0)
    calibration = calibrate(data, "clusters", 2, centre)
    assert (calibration.subjects, calibration.sequences, calibration.centred) == (12, 60, True)
    np.testing.assert_array_equal(decode_centre(encode_centre(centre, "clusters", 60)), centre)
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    raw = json.loads((art / "manifest.json").read_text())
    raw["calibration"] = calibration.model_dump()
    raw["indexing"] = {
        "normalisation": "per-part-l2",
        "centring": encode_centre(centre, "c", 60).model_dump(),
    }
    (art / "manifest.json").write_text(json.dumps(raw))
    assert read_manifest(art).calibration == calibration
    subject = raw["calibration"]["subject"]
    for broken in (
        {**raw, "calibration": {**raw["calibration"], "surprise": 1}},  # unknown keys are refused
        {**raw, "indexing": {"normalisation": "per-part-l2"}},  # centred scores need the centring
        {**raw, "calibration": {**raw["calibration"], "subject": {**subject, "fars": subject["fars"][::-1]}}},
    ):
        (art / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(ArtifactError, match="invalid manifest"):
            read_manifest(art)


def test_centring_spreads_impostor_scores_towards_zero():
    vectors, labels = clustered_embeddings(20, 4, LAYOUT, 0.6, np.random.default_rng(6))
    emb = LAYOUT.unflatten(vectors) + 0.8  # a direction every embedding shares, as trained models have
    raw = sequence_scores(normalise_parts(emb), labels)
    centred = sequence_scores(centre_parts(emb, normalise_parts(emb).mean(axis=0)), labels)
    assert raw.impostor.mean() > 0.8 and abs(centred.impostor.mean()) < 0.1
    assert isinstance(far_table(centred, "sequence"), FarTable)


@pytest.fixture(scope="module")
def labelled_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("labelled") / "heldout"
    generate_opengait(out, 10, seed=11, sequences_per_subject=5)
    return out


def test_gaitlu_calibrate_writes_the_manifest_and_leaves_the_model_alone(
    capsys, tiny_artifact, labelled_set, tmp_path
):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    before = read_manifest(art)
    model_bytes = (art / "model.onnx").read_bytes()
    options = ("--enrolled-per-subject", "2", "--centring", "on", "--name", "held-out walkers", "--json")
    result = run_cli(capsys, "calibrate", "--artifact", art, "--dataset", labelled_set, *options)
    assert result.code == 0, result.err
    report = result.json()
    after = read_manifest(art)
    assert (
        after.model_sha256 == before.model_sha256 == sha256_file(art / "model.onnx") == report["model_hash"]
    )
    assert (art / "model.onnx").read_bytes() == model_bytes
    assert after.model_dump(exclude={"calibration", "indexing"}) == before.model_dump(
        exclude={"calibration", "indexing"}
    )
    calibration = after.calibration
    assert calibration is not None and calibration.dataset == "held-out walkers"
    assert (calibration.subjects, calibration.sequences, calibration.enrolled_per_subject) == (10, 50, 2)
    assert calibration.subject.impostors == 10 * 3 * 9  # 3 probes per subject against 9 others
    assert [t.far for t in calibration.subject.thresholds] == [1e-2, 1e-3, 1e-4]
    assert after.indexing.centring is not None and calibration.centred
    assert not list(art.glob(".manifest.json.*"))  # written atomically: no temporary file left


def test_gaitlu_calibrate_reports_a_bad_dataset_before_embedding(capsys, tiny_artifact, tmp_path):
    result = run_cli(capsys, "calibrate", "--artifact", tiny_artifact, "--dataset", tmp_path / "absent")
    assert result.code == 2 and "not found" in result.err

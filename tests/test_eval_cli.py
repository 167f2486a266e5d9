"""`gaitlu eval` end to end on tiny trees written here, the runner, the GEI baseline and embedding files."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from gaitlu.errors import ConfigError, DataError
from gaitlu.evaluation.embeddings import EmbeddingSet, load_embeddings, save_embeddings
from gaitlu.evaluation.gei import gei_embed
from gaitlu.evaluation.protocols import evaluate_saved
from gaitlu.evaluation.runner import embed_sequences, model_frames, select_test_sequences
from gaitlu.labelled import LabelledSequence, load_partition
from tests.support.cli import run_cli

CONDS = ("nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02")
VIEWS = ("000", "090")
TEST_SUBJECTS = ("075", "076", "077", "078")


def write_tree(root: Path, subjects=("001", *TEST_SUBJECTS), partition: bool = True, frames: int = 4) -> Path:
    """Each subject walks as its own random 64x64 mask pattern with a few flipped pixels per frame, so
    a GEI can tell subjects apart under every condition and view."""
    rng = np.random.default_rng(0)
    for subject in subjects:
        pattern = rng.random((64, 64)) < 0.3
        for cond in CONDS:
            for view in VIEWS:
                flips = rng.random((frames, 64, 64)) < 0.02
                seq = ((pattern[None] ^ flips) * 255).astype(np.uint8)  # (T, 64, 64)
                folder = root / subject / cond / view
                folder.mkdir(parents=True)
                (folder / f"{view}.pkl").write_bytes(pickle.dumps(seq, protocol=4))
    if partition:
        split = {"TRAIN_SET": ["001"], "TEST_SET": list(TEST_SUBJECTS)}
        (root / "partition.json").write_text(json.dumps(split))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("casia") / "data")


def test_gei_json_and_saved_embeddings_reproduce_the_result(dataset: Path, tmp_path: Path, capsys) -> None:
    npz = tmp_path / "emb.npz"
    args = ["--baseline", "gei", "--dataset", str(dataset), "--protocol", "casia-b", "--json"]
    code, out, _ = run_cli(capsys, "eval", *args, "--save-embeddings", str(npz), "--batch-size", "3")
    assert code == 0
    result = json.loads(out)  # stdout holds the JSON and nothing else
    assert (
        result["protocol"] == "casia-b" and result["metric"] == "euc" and result["source"] == "baseline:gei"
    )
    assert result["num_sequences"] == len(TEST_SUBJECTS) * len(CONDS) * len(VIEWS)
    assert result["result"]["headline"] == {"NM": 100.0, "BG": 100.0, "CL": 100.0}
    assert result["result"]["conditions"]["NM"]["views"] == list(VIEWS)

    with np.load(npz) as f:
        assert f["emb"].shape == (80, 64 * 44) and f["emb"].dtype == np.float32
        assert set(f["subject"]) == set(TEST_SUBJECTS) and set(f["view"]) == set(VIEWS)
    again = evaluate_saved(npz, "casia-b")
    assert {k: round(v, 4) for k, v in again.headline().items()} == result["result"]["headline"]


def test_table_output_lists_probe_views_and_means(dataset: Path, capsys) -> None:
    code, out, _ = run_cli(
        capsys, "eval", "--baseline", "gei", "--dataset", str(dataset), "--protocol", "casia-b"
    )
    assert code == 0
    for text in ("NM", "BG", "CL", "000", "090", "mean", "identical view", "100.0"):
        assert text in out


def test_casia_b_without_partition_falls_back_to_the_lt_split(tmp_path: Path, capsys) -> None:
    root = write_tree(tmp_path / "data", subjects=("074", "075", "076"), partition=False, frames=2)
    code, out, err = run_cli(
        capsys, "eval", "--baseline", "gei", "--dataset", str(root), "--protocol", "casia-b", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["num_sequences"] == 2 * len(CONDS) * len(VIEWS)  # 074 is a training subject
    code, _, err = run_cli(
        capsys, "eval", "--baseline", "gei", "--dataset", str(root), "--protocol", "oumvlp"
    )
    assert code == 2 and "partition" in err


def test_unreadable_sequences_are_skipped_and_reported(tmp_path: Path, capsys) -> None:
    root = write_tree(tmp_path / "data", subjects=TEST_SUBJECTS[:2], frames=2)
    (root / "075" / "cl-01" / "000" / "000.pkl").write_bytes(b"\x80\x04broken")
    code, out, err = run_cli(
        capsys, "eval", "--baseline", "gei", "--dataset", str(root), "--protocol", "casia-b", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["skipped"] == ["075-cl-01-000"] and result["num_sequences"] == 2 * 20 - 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--protocol", "casia-b"], "exactly one of"),
        (["--protocol", "casia-b", "--baseline", "gei", "--artifact", "x"], "exactly one of"),
        (
            ["--protocol", "casia-b", "--baseline", "gei", "--partition", "/no/p.json"],
            "partition file not found",
        ),
        (["--protocol", "gait3d", "--baseline", "gei"], "PROBE_SET"),
    ],
)
def test_bad_invocations_exit_2_with_a_message(dataset: Path, extra: list[str], message: str, capsys) -> None:
    code, out, err = run_cli(
        capsys, "eval", "--dataset", str(dataset), "--protocol", "casia-b", *extra
    )  # last wins
    assert code == 2 and message in err and out == ""


def test_missing_and_empty_datasets_are_clear_errors(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(
        capsys, "eval", "--baseline", "gei", "--dataset", str(tmp_path / "nope"), "--protocol", "casia-b"
    )
    assert code == 2 and "dataset folder not found" in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "partition.json").write_text('{"TRAIN_SET": [], "TEST_SET": ["075"]}')
    code, _, err = run_cli(
        capsys, "eval", "--baseline", "gei", "--dataset", str(tmp_path / "empty"), "--protocol", "casia-b"
    )
    assert code == 2 and "no sequences" in err


def test_a_missing_stage_names_what_to_install(dataset: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "train.embedder", None)  # as if the train stage were not installed
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"")
    code, _, err = run_cli(
        capsys, "eval", "--checkpoint", str(ckpt), "--dataset", str(dataset), "--protocol", "casia-b"
    )
    assert code == 2 and "needs the train stage" in err


def test_the_artifact_source_scores_the_runtime_embedders_output(
    dataset: Path, tiny_artifact: Path, tmp_path: Path, capsys
) -> None:
    from runtime import load_artifact_embedder

    npz = tmp_path / "emb.npz"
    args = ["--artifact", str(tiny_artifact), "--dataset", str(dataset), "--protocol", "casia-b", "--json"]
    code, out, err = run_cli(capsys, "eval", *args, "--save-embeddings", str(npz))
    assert code == 0, err
    result = json.loads(out)
    saved = load_embeddings(npz)
    assert result["embedding_shape"] == list(saved.emb.shape[1:])
    assert result["num_sequences"] == len(saved.emb) == len(TEST_SUBJECTS) * len(CONDS) * len(VIEWS)
    # What was scored is the artifact's runtime output for each sequence, row by row.
    row = int(np.flatnonzero((saved.subject == "076") & (saved.cond == "cl-02") & (saved.view == "090"))[0])
    frames = model_frames(LabelledSequence(dataset / "076" / "cl-02" / "090", "076", "cl-02", "090"))
    direct = load_artifact_embedder(tiny_artifact).embed_output([frames])[0]
    np.testing.assert_allclose(saved.emb[row], direct, rtol=1e-4, atol=1e-5)
    again = evaluate_saved(npz, "casia-b").headline()
    assert {k: round(v, 4) for k, v in again.items()} == result["result"]["headline"]


def test_gei_is_the_mean_frame_scaled_to_one() -> None:
    a = np.zeros((2, 64, 44), dtype=np.uint8)
    a[0] = 255
    emb = gei_embed([a, np.full((3, 64, 44), 255, np.uint8)])
    assert emb.shape == (2, 1, 64 * 44) and emb.dtype == np.float32
    np.testing.assert_allclose(emb[:, 0, 0], [0.5, 1.0])
    with pytest.raises(ValueError, match="64, 44"):
        gei_embed([np.zeros((2, 64, 64), np.uint8)])


def test_long_sequences_keep_their_first_frames_in_order(tmp_path: Path) -> None:
    seq = np.zeros((30, 64, 64), dtype=np.uint8)
    seq[:, 0, 10] = np.arange(30)  # frame index written into a pixel that survives the 64 -> 44 cut
    (tmp_path / "s.pkl").write_bytes(pickle.dumps(seq, protocol=4))
    frames = model_frames(LabelledSequence(tmp_path, "1", "c", "v"), max_frames=4)
    assert frames.shape == (4, 64, 44)
    np.testing.assert_array_equal(frames[:, 0, 0], [0, 1, 2, 3])


def test_embedding_file_round_trip_keeps_parts_and_rejects_garbage(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    data = EmbeddingSet(rng.normal(size=(4, 3, 5)), ["a", "b", "c", "d"], ["x"] * 4, ["000"] * 4)
    save_embeddings(data, tmp_path / "e.npz")
    back = load_embeddings(tmp_path / "e.npz")
    np.testing.assert_array_equal(back.emb, data.emb.astype(np.float32))
    assert list(back.subject) == ["a", "b", "c", "d"]
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(DataError, match="cannot read"):
        load_embeddings(tmp_path / "bad.npz")
    np.savez(tmp_path / "partial.npz", emb=np.zeros((2, 3)))
    with pytest.raises(DataError, match="lacks subject"):
        load_embeddings(tmp_path / "partial.npz")


def test_embedder_returning_the_wrong_shape_is_a_config_error(dataset: Path) -> None:
    seqs = select_test_sequences(dataset, load_partition(dataset / "partition.json"))[:3]
    with pytest.raises(ConfigError, match="returned shape"):
        embed_sequences(seqs, lambda batch: np.zeros((1, 4)), progress=False)

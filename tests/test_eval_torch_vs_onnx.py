"""`gaitlu eval` measures a checkpoint and its exported artifact with the same code: same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gaitlu.manifest import read_manifest
from gaitlu.sequence import save_sequence
from synth import identity_for, render_sequence
from tests.support.cli import run_cli

CONDITIONS = ("nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06", "bg-01", "cl-01")
VIEWS = (0, 90)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic people, eight conditions, two views, short walks: a CASIA-B tree with gaps."""
    root = tmp_path_factory.mktemp("casiab")
    for subject in (1, 2, 3):
        person = identity_for(5, subject)
        for c, cond in enumerate(CONDITIONS):
            for view in VIEWS:
                rng = np.random.default_rng([subject, c, view])
                walk = render_sequence(person, float(view), cond[:2], 24, rng)
                save_sequence(walk, root / f"{subject:03d}" / cond / f"{view:03d}" / f"{view:03d}.pkl")
    (root / "partition.json").write_text(json.dumps({"TRAIN_SET": [], "TEST_SET": ["001", "002", "003"]}))
    return root


def evaluate(source: list[str], dataset: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    result = run_cli(capsys, "eval", *source, "--dataset", dataset, "--protocol", "casia-b", "--json")
    assert result.code == 0, result.err
    return result.json()


def test_checkpoint_and_artifact_give_the_same_table(
    tiny_artifact: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = read_manifest(tiny_artifact).source.checkpoint
    torch_result = evaluate(["--checkpoint", checkpoint], dataset, capsys)
    onnx_result = evaluate(["--artifact", str(tiny_artifact)], dataset, capsys)
    assert torch_result["embedding_shape"] == onnx_result["embedding_shape"]
    assert torch_result["result"]["headline"] == onnx_result["result"]["headline"]
    headline = torch_result["result"]["headline"]
    assert set(headline) == {"NM", "BG", "CL"} and all(0 <= v <= 100 for v in headline.values())

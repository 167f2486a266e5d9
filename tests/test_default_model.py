"""The default model: models/default (committed by `make default-model`) is checked against its hashes,
and where it is missing the demo builds it from scratch with the same recipe, here shrunk to seconds.

The hash check never skips: it checks the committed model when there is one, else a model just built
from scratch, and a copy with one changed byte must be refused either way.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gaitlu.errors import GaitluError
from gaitlu.manifest import MANIFEST_NAME, ArtifactError, read_manifest
from gaitlu.preprocess import to_model_frames
from synth import identity_for, render_sequence, sequence_rng
from workflows import demo

# 8 unlabelled people x 4 walks: one SSL batch; 14 labelled people, 8 train: one P8 x K4 batch; 2 steps
# each; 4 held-out people x 12 walks calibrate (10 enrolled, 2 probes each).
SMALL = demo.Recipe(
    ssl_identities=8,
    ssl_steps=2,
    identities=14,
    walks=4,
    supervised_steps=2,
    calibration_identities=4,
    calibration_walks=12,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default model built from nothing by the demo's own commands (synth, pack, pretrain, synth,
    finetune, export), published into a models/default folder of its own."""
    root = tmp_path_factory.mktemp("default-model")
    return demo.build_default_model(root / "models" / "default", root / "builds", SMALL)


@pytest.fixture
def model(built: Path) -> Path:
    """The committed default model when the checkout has one, else the one built from scratch."""
    return demo.DEFAULT_MODEL if (demo.DEFAULT_MODEL / MANIFEST_NAME).exists() else built


@pytest.mark.slow
def test_the_default_model_matches_its_manifest_and_build_record(model: Path) -> None:
    demo.check_default_model(model)  # every listed file: its size and sha256
    listed = {v.file for v in read_manifest(model).variants.values()}
    assert {p.name for p in model.iterdir()} >= listed | {demo.CHECKPOINT_FILE, demo.BUILD_RECORD}
    record = json.loads((model / demo.BUILD_RECORD).read_text())
    assert (
        "train finetune" in record["commands"]["supervised"]
        and "--layout opengait" in record["commands"]["labelled"]
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["model.onnx", demo.CHECKPOINT_FILE])
def test_one_changed_byte_is_refused_by_the_check_and_the_demo(
    model: Path, tmp_path: Path, name: str
) -> None:
    copy = tmp_path / "default"
    shutil.copytree(model, copy)
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{name} does not match"):
        demo.check_default_model(copy)
    with pytest.raises(GaitluError, match="default model is damaged"):
        demo.default_model(copy, tmp_path / "builds", SMALL, rebuild=False)


@pytest.mark.slow
def test_the_built_checkpoint_and_artifact_are_one_model(built: Path) -> None:
    from runtime.embedder import load_artifact_embedder
    from train.embedder import load_checkpoint_embedder

    walks = [
        to_model_frames(render_sequence(identity_for(5, s), 90, "nm", 30, sequence_rng(5, s, 0)))
        for s in (1, 2)
    ]
    onnx = load_artifact_embedder(built, backend="cpu", threads=1).embed_output(walks)
    torch_out = load_checkpoint_embedder(built / demo.CHECKPOINT_FILE, "cpu").embed(walks)
    np.testing.assert_allclose(onnx, torch_out, atol=1e-4)


@pytest.mark.slow
def test_a_present_model_is_served_and_a_rebuild_reuses_finished_stages(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "models" / "default"
    shutil.copytree(built, served)
    builds = built.parents[1] / "builds"
    commands: list[str] = []
    run = demo._gaitlu

    def recorded(title: str, args: list[str]) -> None:
        commands.append(args[0])
        run(title, args)

    monkeypatch.setattr(demo, "_gaitlu", recorded)
    assert demo.default_model(served, builds, SMALL, rebuild=False) == served
    assert commands == []  # served as it is: nothing built
    assert demo.default_model(served, builds, SMALL, rebuild=True) == served
    assert commands == ["data", "export", "calibrate"]  # cached stages do not run again; the fresh export
    # is calibrated again on the cached held-out set
    demo.check_default_model(served)
    record = json.loads((served / demo.BUILD_RECORD).read_text())
    assert (
        record["checkpoint_sha256"]
        == json.loads((built / demo.BUILD_RECORD).read_text())["checkpoint_sha256"]
    )
    assert demo.Recipe(ssl_steps=3).key() != demo.Recipe().key()


def test_publish_replaces_the_model_folder_whole(tmp_path: Path) -> None:
    staging, target = tmp_path / "staging", tmp_path / "models" / "default"
    staging.mkdir()
    (staging / "a.txt").write_text("new")
    target.mkdir(parents=True)
    (target / "stale.txt").write_text("old")
    demo.publish(staging, target)
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["default"]  # no temp folders left

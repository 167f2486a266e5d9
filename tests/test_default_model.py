"""The shipped models: models/default (real CASIA-B people) and models/synthetic (synthetic walkers only)
are checked against their hashes, and where one is missing the demo builds it from scratch with the same
recipe, here shrunk to seconds.

The hash check never skips: both models are committed, and a copy with one changed byte is refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gaitlu.errors import GaitluError
from gaitlu.manifest import ArtifactError, read_manifest
from gaitlu.preprocess import to_model_frames
from synth import identity_for, render_sequence, sequence_rng
from tests.test_train_supervised import TINY_GAITBASE, write_walkers
from workflows import models

# 8 unlabelled people x 4 walks: one SSL batch; 14 labelled people, 8 train: one P8 x K4 batch; 2 steps
# each; 4 held-out people x 12 walks calibrate (10 enrolled, 2 probes each).
CALIBRATION = models.Calibration(identities=4, walks=12)
SMALL = models.SyntheticRecipe(
    ssl_identities=8, ssl_steps=2, identities=14, walks=4, supervised_steps=2, calibration=CALIBRATION
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic model built from nothing by the demo's own commands (synth, pack, pretrain, synth,
    finetune, export, calibrate), published into a models/synthetic folder of its own."""
    root = tmp_path_factory.mktemp("synthetic-model")
    return models.build_synthetic_model(root / "models" / "synthetic", root / "builds", SMALL)


@pytest.mark.parametrize(
    ("name", "trained_by"), [("default", "train supervised"), ("synthetic", "train finetune")]
)
def test_the_committed_models_match_their_manifests_and_build_records(name: str, trained_by: str) -> None:
    model = models.MODELS[name]
    models.check_model(model)  # every listed file: its size and sha256
    listed = {v.file for v in read_manifest(model).variants.values()}
    assert {p.name for p in model.iterdir()} >= listed | {models.CHECKPOINT_FILE, models.BUILD_RECORD}
    record = json.loads((model / models.BUILD_RECORD).read_text())
    assert any(trained_by in command for command in record["commands"].values())
    assert read_manifest(model).calibration is not None


def test_the_default_model_card_states_the_weights_terms() -> None:
    card = (models.DEFAULT_MODEL / models.MODEL_CARD).read_text()
    for needed in ("CASIA-B", "001-074", "research", "Yu, Tan and Tan"):
        assert needed in card


@pytest.mark.parametrize("start", ["synthetic", "scratch"])
def test_the_default_is_built_from_the_dev_set_by_the_projects_own_commands(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    """As shipped: the synthetic model's weights trained on the dev set; or a fresh network."""
    tree = write_walkers(tmp_path / "dev")
    monkeypatch.setenv("GAITLU_CASIAB_DEV", str(tree))
    import torch

    init = built / models.CHECKPOINT_FILE if start == "synthetic" else None
    network = (
        {"architecture": "gaitssb", "config": torch.load(init, weights_only=True)["model_config"]}
        if init
        else {"architecture": "gaitbase", "config": TINY_GAITBASE}
    )
    config = tmp_path / "tiny.yaml"
    config.write_text(
        json.dumps(
            {
                "model": network,
                "data": {"subjects_per_batch": 4, "sequences_per_subject": 4, "frames": 6, "num_workers": 0},
                "trainer": {"max_steps": 2, "checkpoint_every": 2, "precision": "fp32"},
            }
        )
    )
    recipe = models.RealRecipe(
        config=config, partition=tree / "partition.json", init=init, calibration=CALIBRATION
    )
    builds = tmp_path / "builds"
    model_dir = models.build_real_model(tmp_path / "models" / "default", builds, recipe, tmp_path)
    models.check_model(model_dir)
    record = json.loads((model_dir / models.BUILD_RECORD).read_text())
    assert "train supervised" in record["commands"]["train"] and "CASIA-B" in record["note"]
    assert ("--init" in record["commands"]["train"]) == (init is not None)
    manifest = read_manifest(model_dir)
    assert manifest.model.name == network["architecture"] and manifest.calibration is not None
    if init is not None:  # trained from the synthetic weights: two steps move them only a little
        before = torch.load(init, map_location="cpu", weights_only=True)["model"]
        after = torch.load(model_dir / models.CHECKPOINT_FILE, map_location="cpu", weights_only=True)["model"]
        convs = [k for k, v in before.items() if v.dim() == 4]
        moved = torch.cat([after[k].flatten() for k in convs])
        start_weights = torch.cat([before[k].flatten() for k in convs])
        assert not torch.equal(start_weights, moved)
        assert torch.cosine_similarity(start_weights, moved, dim=0) > 0.9  # a fresh network: about 0


def test_building_the_default_without_the_dev_set_says_what_is_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GAITLU_CASIAB_DEV", raising=False)
    with pytest.raises(GaitluError, match="CASIA-B development set") as info:
        models.build_real_model(
            tmp_path / "default", tmp_path / "builds", models.RealRecipe(), tmp_path / "none"
        )
    assert "--casiab-dev" in str(info.value) and "GAITLU_CASIAB_DEV" in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["model.onnx", models.CHECKPOINT_FILE])
def test_one_changed_byte_is_refused_by_the_check_and_the_demo(tmp_path: Path, name: str) -> None:
    copy = tmp_path / "default"
    shutil.copytree(models.DEFAULT_MODEL, copy)
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{name} does not match"):
        models.check_model(copy)
    with pytest.raises(GaitluError, match="is damaged"):
        models.shipped_model(copy, tmp_path / "builds", models.RealRecipe(), rebuild=False)


@pytest.mark.slow
def test_the_built_checkpoint_and_artifact_are_one_model(built: Path) -> None:
    from runtime.embedder import load_artifact_embedder
    from train.embedder import load_checkpoint_embedder

    walks = [
        to_model_frames(render_sequence(identity_for(5, s), 90, "nm", 30, sequence_rng(5, s, 0)))
        for s in (1, 2)
    ]
    onnx = load_artifact_embedder(built, backend="cpu", threads=1).embed_output(walks)
    torch_out = load_checkpoint_embedder(built / models.CHECKPOINT_FILE, "cpu").embed(walks)
    np.testing.assert_allclose(onnx, torch_out, atol=1e-4)


@pytest.mark.slow
def test_a_present_model_is_served_and_a_rebuild_reuses_finished_stages(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "models" / "synthetic"
    shutil.copytree(built, served)
    builds = built.parents[1] / "builds"
    commands: list[str] = []
    run = models.gaitlu

    def recorded(title: str, args: list[str]) -> None:
        commands.append(args[0])
        run(title, args)

    monkeypatch.setattr(models, "gaitlu", recorded)
    assert models.shipped_model(served, builds, SMALL, rebuild=False) == served
    assert commands == []  # served as it is: nothing built
    assert models.shipped_model(served, builds, SMALL, rebuild=True) == served
    assert commands == ["data", "export", "calibrate"]  # cached stages do not run again; the fresh export
    # is calibrated again on the cached held-out set
    models.check_model(served)
    record = json.loads((served / models.BUILD_RECORD).read_text())
    assert (
        record["checkpoint_sha256"]
        == json.loads((built / models.BUILD_RECORD).read_text())["checkpoint_sha256"]
    )
    assert models.recipe_key(models.SyntheticRecipe(ssl_steps=3)) != models.recipe_key(
        models.SyntheticRecipe()
    )


def test_publish_replaces_the_model_folder_whole(tmp_path: Path) -> None:
    staging, target = tmp_path / "staging", tmp_path / "models" / "default"
    staging.mkdir()
    (staging / "a.txt").write_text("new")
    target.mkdir(parents=True)
    (target / "stale.txt").write_text("old")
    models.publish(staging, target)
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["default"]  # no temp folders left

"""Importing OpenGait's zoo: paper-width layouts, refusals that list what is wrong, GaitGL's short
sequences, and `gaitlu eval` scoring an imported model as OpenGait's evaluator would."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from export.pipeline import ExportOptions, export_artifact
from gaitlu.errors import ConfigError, DataError
from gaitlu.evaluation.embeddings import load_embeddings
from gaitlu.evaluation.runner import model_frames, select_test_sequences
from gaitlu.labelled import load_partition
from tests.support.cli import run_cli
from tests.support.zoo import STEMS, cases, meta, paths
from tests.test_eval_cli import write_tree
from train.opengait import import_opengait, read_opengait
from train.zoo.opengait_models import OPENGAIT_MODELS, opengait_model
from train.zoo.registry import build_network


def our_layout(model_cfg: dict, dataset: str) -> dict[str, tuple[int, ...]]:
    """The OpenGait keys and shapes our network built from `model_cfg` maps onto, training-only included."""
    spec = opengait_model(model_cfg["model"])
    config = spec.read_config(model_cfg, dataset)
    state = build_network(spec.architecture, config).state_dict()
    layout = {spec.opengait_key(config, k): tuple(v.shape) for k, v in state.items()}
    return layout | spec.training_only(model_cfg, config)


def is_width(value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, list) and all(isinstance(v, int) for v in value))


def paper_config(source: dict) -> dict:
    """The fixture's model_cfg with every narrowed width put back (other edits, e.g. mode 2d, stay)."""
    cfg = copy.deepcopy(source["model_cfg"])
    for edit in source["cfg_edits"]:
        if is_width(edit["used_value"]):
            *parents, leaf = edit["path"].split(".")
            section = cfg
            for name in parents:
                section = section[name]
            section[leaf] = edit["config_value"]
    return cfg


def paper_layout(source: dict) -> dict[str, tuple[int, ...]]:
    """What OpenGait builds from the unchanged paper-width config, derived from the narrow state dict
    OpenGait wrote: the same keys (width never changes a name), each width the fixtures narrowed put back.
    Dimensions that are not widths stay: kernels, `fc_bin`'s leading part count, and the BNNeck
    BatchNorm's C x P, which scales with C only."""
    widths: dict[int, int] = {}
    for edit in source["cfg_edits"]:
        narrow, paper = edit["used_value"], edit["config_value"]
        if isinstance(narrow, list) and is_width(narrow):
            widths |= dict(zip(narrow, paper, strict=True))
        elif isinstance(narrow, int):
            widths[narrow] = paper
    parts = {k: shape[0] for k, shape, _ in source["state_dict"] if k.endswith("fc_bin")}
    layout = {}
    for key, shape, _ in source["state_dict"]:
        if key.endswith("fc_bin"):
            new = [shape[0], *(widths.get(d, d) for d in shape[1:])]
        elif key.startswith("BNNecks.bn1d.") and shape:
            p = parts["BNNecks.fc_bin"]
            new = [widths.get(shape[0] // p, shape[0] // p) * p]
        else:
            new = [widths.get(d, d) for d in shape]
        layout[key] = tuple(new)
    return layout


@pytest.mark.parametrize("stem", STEMS)
def test_layouts_match_opengait_at_fixture_and_paper_width(stem: str) -> None:
    source = meta()["models"][stem]
    narrow = {k: tuple(shape) for k, shape, _ in source["state_dict"]}
    assert our_layout(source["model_cfg"], source["dataset_name"]) == narrow
    paper = our_layout(paper_config(source), source["dataset_name"])
    assert paper == paper_layout(source)
    assert max(max(s, default=0) for s in paper.values()) > max(max(s, default=0) for s in narrow.values())


def test_every_supported_name_and_an_unknown_one() -> None:
    assert set(OPENGAIT_MODELS) >= {"Baseline", "DeepGaitV2", "GaitSet", "GaitGL", "GaitSSB_Finetune"}
    with pytest.raises(ConfigError) as err:
        opengait_model("GaitPart")
    assert "'GaitPart' is not supported; supported: Baseline, DeepGaitV2, GaitSet, GaitGL" in str(err.value)


def write_config(tmp_path: Path, stem: str, edit: Any) -> Path:
    cfg = yaml.safe_load(paths(stem)[1].read_text())
    edit(cfg["model_cfg"])
    path = tmp_path / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_refuses_unsupported_models_and_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, _ = paths("deepgaitv2_p3d_gait3d_narrow")
    edits = {
        "GaitPart": lambda c: c.update(model="GaitPart"),
        "mode '3d' is not supported; supported: 2d, p3d": lambda c: c["Backbone"].update(mode="3d"),
        "unsupported keys ['half_width']": lambda c: c.update(half_width=True),
    }
    for expected, edit in edits.items():
        config = write_config(tmp_path, "deepgaitv2_p3d_gait3d_narrow", edit)
        args = [
            "train",
            "import-opengait",
            str(checkpoint),
            "--config",
            str(config),
            "--out",
            str(tmp_path / "x.pt"),
        ]
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and expected in err and "Traceback" not in err, err
        assert "Baseline, DeepGaitV2, GaitSet, GaitGL" in err or expected != "GaitPart"
    assert not (tmp_path / "x.pt").exists()
    code, _, err = run_cli(
        capsys, "train", "import-opengait", str(checkpoint), "--out", str(tmp_path / "x.pt")
    )
    assert code == 2 and "need --config" in err


def save_state(path: Path, state: dict) -> Path:
    torch.save({"model": state, "iteration": 5}, path)
    return path


def test_missing_unexpected_and_misshaped_keys_are_all_listed(tmp_path: Path) -> None:
    checkpoint, config = paths("gaitbase_casiab_narrow")
    state, _ = read_opengait(checkpoint)
    del state["Backbone.forward_block.layer3.0.bn2.running_var"]
    state["Backbone.forward_block.layer3.1.conv1.weight"] = torch.zeros(
        32, 32, 3, 3
    )  # a block the config lacks
    state["FCs.fc_bin"] = torch.zeros(16, 64, 48)
    state["BNNecks.fc_bin"] = torch.zeros(16, 32, 10)  # training-only keys are checked too
    with pytest.raises(DataError) as err:
        import_opengait(save_state(tmp_path / "bad.pt", state), tmp_path / "out.pt", config=config)
    message = str(err.value)
    assert "unknown keys: ['Backbone.forward_block.layer3.1.conv1.weight']" in message
    assert "missing keys: ['Backbone.forward_block.layer3.0.bn2.running_var']" in message
    assert "FCs.fc_bin: (16, 64, 48) in the file, (16, 64, 32) expected" in message
    assert "BNNecks.fc_bin: (16, 32, 10) in the file, (16, 32, 74) expected" in message
    assert not (tmp_path / "out.pt").exists()


def test_a_config_of_another_model_is_refused(tmp_path: Path) -> None:
    checkpoint, _ = paths("deepgaitv2_2d_gait3d_narrow")
    _, config = paths("deepgaitv2_p3d_gait3d_narrow")
    with pytest.raises(DataError, match=r"unknown keys: \['layer2\.forward_block\.0\.bn1\.bias'"):
        import_opengait(checkpoint, tmp_path / "out.pt", config=config)


def test_gaitgl_tiles_short_sequences_as_opengait_does(tmp_path: Path) -> None:
    checkpoint, config = paths("gaitgl_casiab_narrow")
    model = import_opengait(checkpoint, tmp_path / "gl.pt", config=config)
    _, sils, _ = cases("gaitgl_casiab_narrow")[0]
    one, two = torch.from_numpy(sils[:1, :1]), torch.from_numpy(sils[:1, :2])
    with torch.inference_mode():
        # OpenGait repeats the whole sequence: 1 frame x 3, 2 frames x 2 (f0 f1 f0 f1).
        torch.testing.assert_close(model(one), model(one.repeat(1, 3, 1, 1)), rtol=0, atol=0)
        torch.testing.assert_close(model(two), model(two[:, [0, 1, 0, 1]]), rtol=0, atol=0)
        assert not torch.allclose(model(two), model(two[:, [0, 0, 1, 1]]))


def test_eval_scores_an_imported_model_as_its_opengait_config_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, _ = paths("gaitgl_casiab_narrow")
    cfg = yaml.safe_load(paths("gaitgl_casiab_narrow")[1].read_text())
    cfg["evaluator_cfg"] = {"metric": "cos", "sampler": {"sample_type": "all_ordered", "frames_all_limit": 4}}
    config = tmp_path / "gaitgl.yaml"
    config.write_text(yaml.safe_dump(cfg))
    model = import_opengait(checkpoint, tmp_path / "gl.pt", config=config)
    export_artifact(
        tmp_path / "gl.pt", tmp_path / "gl", ExportOptions(max_batch=4, max_frames=16, parity_cases=((1, 4),))
    )
    dataset = write_tree(tmp_path / "casia", frames=6)

    results = {}
    for source in (["--checkpoint", str(tmp_path / "gl.pt")], ["--artifact", str(tmp_path / "gl")]):
        saved = tmp_path / f"{source[0][2:]}.npz"
        args = ["eval", *source, "--dataset", str(dataset), "--protocol", "casia-b", "--json"]
        code, out, err = run_cli(capsys, *args, "--save-embeddings", str(saved))
        assert code == 0, err
        results[source[0]] = result = json.loads(out)
        assert (
            result["metric"] == "cos" and result["metric_source"] == "OpenGait: evaluator_cfg of gaitgl.yaml"
        )
        assert result["frames_limit"] == 4
        data = load_embeddings(saved)
        first = data.select(np.arange(1))
        seq = select_test_sequences(dataset, load_partition(dataset / "partition.json"))[0]
        frames = torch.from_numpy(model_frames(seq, max_frames=4)).float()[None] / 255  # the first 4 of 6
        with torch.inference_mode():
            raw = model(frames).numpy()  # (1, 64, C): raw, not normalised
        np.testing.assert_allclose(first.emb, raw, rtol=1e-4, atol=1e-5)
        assert not np.allclose(np.linalg.norm(first.emb, axis=-1), 1.0, atol=0.05)  # raw, not unit parts
    assert results["--checkpoint"]["result"]["headline"] == results["--artifact"]["result"]["headline"]

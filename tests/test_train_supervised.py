"""Supervised training of every registered architecture: `gaitlu train supervised`, its loss, its head,
resume, and that a short run learns (beats the same network's random init on Rank-1)."""

from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gaitlu.evaluation.crossview import casia_b
from gaitlu.evaluation.embeddings import EmbeddingSet
from gaitlu.labelled import read_labelled, scan_labelled
from tests.support.cli import run_cli
from tests.support.walkers import walking_sequence
from train.checkpoint import atomic_save, build_checkpoint, list_checkpoints, load_checkpoint
from train.config import load_config
from train.losses import part_cross_entropy
from train.run import to_channels_last
from train.supervised import BNNeck, SupervisedConfig, initial_network
from train.zoo.registry import ARCHITECTURES, build_network

REPO = Path(__file__).resolve().parents[1]
CONDS = ("nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02")
VIEWS = ("000", "090")
TINY_GAITBASE = {"channels": [4, 8, 8, 8], "fc_dim": 8, "bins": [8]}


def noisy_walk(subject: int, sequence: int) -> np.ndarray:
    """A walker whose identity is its body (the seed) under a strong per-sequence nuisance: a fixed
    random pattern of blobs over the whole walk, which a random network's features are dominated by."""
    walk = walking_sequence(subject, frames=10, walk=sequence)
    rng = np.random.default_rng([subject, sequence, 7])
    nuisance = ((rng.random((64, 44)) < 0.08) * 255).astype(np.uint8)
    noisy: np.ndarray = np.maximum(walk, nuisance[None])
    return noisy


def write_walkers(root: Path, subjects: int = 8) -> Path:
    """A CASIA-B-shaped tree of walkers: every subject trains (TRAIN_SET) and is tested (TEST_SET)."""
    names = [f"{i:03d}" for i in range(1, subjects + 1)]
    for s, subject in enumerate(names):
        for c, cond in enumerate(CONDS):
            for v, view in enumerate(VIEWS):
                folder = root / subject / cond / view
                folder.mkdir(parents=True)
                seq = noisy_walk(s, c * len(VIEWS) + v)
                (folder / "sils.pkl").write_bytes(pickle.dumps(seq, protocol=4))
    (root / "partition.json").write_text(json.dumps({"TRAIN_SET": names, "TEST_SET": names}))
    return root


@pytest.fixture(scope="module")
def walkers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_walkers(tmp_path_factory.mktemp("walkers") / "data")


def tiny_config(tmp_path: Path, max_steps: int = 40, **loss: object) -> Path:
    values = {
        "model": {"architecture": "gaitbase", "config": TINY_GAITBASE},
        "data": {"subjects_per_batch": 4, "sequences_per_subject": 4, "frames": 6, "num_workers": 0},
        "augment": {"p_low_res": 0.2, "p_short": 0.2, "p_band": 0.2},
        "loss": {"margin": 0.2, "ce_weight": 1.0, **loss},
        "optimizer": {"lr": 0.05},
        "scheduler": {"milestones": [max_steps * 3 // 4]},
        "trainer": {
            "max_steps": max_steps,
            "checkpoint_every": max_steps // 2,
            "keep_last": 5,
            "log_every": 5,
            "precision": "fp32",
            "deterministic": True,
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(values))  # JSON is YAML
    return path


def rank1(model: torch.nn.Module, root: Path) -> float:
    """Mean CASIA-B cross-view Rank-1 (Euclidean) of `model` on the tree."""
    sequences = scan_labelled(root)
    with torch.no_grad():
        emb = np.concatenate(
            [
                model(torch.from_numpy(read_labelled(s)[None, :, :, :44] / 255.0).float()).numpy()
                for s in sequences
            ]
        )
    data = EmbeddingSet(
        emb,
        np.array([s.subject for s in sequences]),
        np.array([s.condition for s in sequences]),
        np.array([s.view for s in sequences]),
    )
    return float(np.mean(list(casia_b(data, "euc").headline().values())))


def train_args(config: Path, walkers: Path, out: Path) -> list[str]:
    return [
        "train", "supervised", "--config", str(config), "--dataset", str(walkers),
        "--partition", str(walkers / "partition.json"), "--out", str(out), "--device", "cpu",
    ]  # fmt: skip


def metrics(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_short_run_lowers_the_loss_and_beats_random_init(
    tmp_path: Path, walkers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config(tmp_path, max_steps=60)
    code, _, err = run_cli(capsys, *train_args(config, walkers, tmp_path / "run"))
    assert code == 0, err
    losses = [m["loss"] for m in metrics(tmp_path / "run")]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:2])
    trained, ckpt = load_checkpoint(list_checkpoints(tmp_path / "run")[-1][1])
    torch.manual_seed(0)
    random = build_network("gaitbase", TINY_GAITBASE).eval()
    assert rank1(trained, walkers) > rank1(random, walkers) + 10
    assert ckpt["head"] is not None and ckpt["config"]["subjects"][0] == "001"


def test_resume_continues_the_run_exactly_head_included(
    tmp_path: Path, walkers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config(tmp_path, max_steps=10)
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert run_cli(capsys, *train_args(config, walkers, whole)).code == 0
    assert run_cli(capsys, *train_args(config, walkers, split), "--max-steps", "5").code == 0
    code, _, err = run_cli(capsys, *train_args(config, walkers, split), "--resume")
    assert code == 0, err
    a = torch.load(list_checkpoints(whole)[-1][1], weights_only=True)
    b = torch.load(list_checkpoints(split)[-1][1], weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key])
    for key in a["head"]:
        torch.testing.assert_close(a["head"][key], b["head"][key])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: {architecture: gaitnet}\n", "unknown architecture 'gaitnet'"),
        ("model: {config: {channel: [1, 2, 3, 4]}}\n", "model.config.channel: unknown key"),
        ("optimizer: {solver: lion}\n", "optimizer.solver: input should be 'sgd' or 'adam', got 'lion'"),
        ("augment: {p_holes: 1.5}\n", "augment.p_holes must be in [0, 1]"),
        ("data: {subjects_per_batch: 9, sequences_per_subject: 2}\n", "fewer than data.subjects_per_batch"),
    ],
)
def test_bad_configs_fail_before_work_with_a_clear_message(
    tmp_path: Path, walkers: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    code, _, err = run_cli(capsys, *train_args(config, walkers, tmp_path / "run"))
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not list_checkpoints(tmp_path / "run")


def test_init_must_hold_the_configs_architecture(
    tmp_path: Path, walkers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gaitset = build_network("gaitset", {"channels": [4, 4, 4], "fc_dim": 4})
    init = atomic_save(build_checkpoint(gaitset, {}, step=1), tmp_path / "gaitset.pt")
    code, _, err = run_cli(
        capsys, *train_args(tiny_config(tmp_path), walkers, tmp_path / "run"), "--init", init
    )
    assert code == 2
    assert "holds a gaitset model" in err and "gaitbase" in err


def test_init_starts_from_the_checkpoints_weights(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = build_network("gaitbase", TINY_GAITBASE)
    init = atomic_save(build_checkpoint(source, {}, step=1), tmp_path / "init.pt")
    config = load_config(tiny_config(tmp_path), SupervisedConfig)
    network = initial_network(config, init)
    for key, value in source.state_dict().items():
        assert torch.equal(network.state_dict()[key], value)


def test_every_architecture_has_a_shipped_recipe_that_builds() -> None:
    trained = set()
    for path in sorted((REPO / "configs").glob("supervised_*.yaml")):
        config = load_config(path, SupervisedConfig)
        trained.add(type(initial_network(config, None)).__name__)
    assert trained == {a.network.__name__ for a in ARCHITECTURES.values()}
    gaitbase = load_config(REPO / "configs" / "supervised_gaitbase.yaml", SupervisedConfig)
    assert (gaitbase.data.subjects_per_batch, gaitbase.data.sequences_per_subject, gaitbase.data.frames) == (
        8,
        16,
        30,
    )
    assert (gaitbase.loss.margin, gaitbase.loss.scale, gaitbase.loss.ce_weight) == (0.2, 16.0, 1.0)


def test_bnneck_logits_are_scaled_cosines_and_raw_without_cosine() -> None:
    torch.manual_seed(0)
    emb = torch.randn(6, 8, 3)  # (N, C, P)
    head = BNNeck(parts=3, channels=8, classes=5).eval()
    logits = head(emb)  # (N, classes, P)
    assert logits.shape == (6, 5, 3)
    assert float(logits.detach().abs().max()) <= 1.0 + 1e-6
    raw = BNNeck(parts=3, channels=8, classes=5, cosine=False).eval()
    raw.load_state_dict(head.state_dict())
    x = raw.bn(emb)  # (N, C, P)
    expected = torch.einsum("ncp,pck->nkp", x, raw.weight)
    torch.testing.assert_close(raw(emb), expected)


def test_part_cross_entropy_is_the_mean_over_parts_of_each_parts_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 5, 3), torch.tensor([0, 1, 4, 4])
    loss, accuracy = part_cross_entropy(logits, labels, scale=2.0, label_smoothing=0.0)
    per_part = [torch.nn.functional.cross_entropy(2.0 * logits[:, :, p], labels) for p in range(3)]
    torch.testing.assert_close(loss, torch.stack(per_part).mean())
    assert float(accuracy) == float(((2.0 * logits).sum(-1).argmax(-1) == labels).float().mean())


def test_a_trained_gaitbase_exports_and_embeds_as_a_zoo_model(
    tmp_path: Path, walkers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config(tmp_path, max_steps=4)
    assert run_cli(capsys, *train_args(config, walkers, tmp_path / "run")).code == 0
    newest = list_checkpoints(tmp_path / "run")[-1][1]
    code, _, err = run_cli(capsys, "export", newest, "--out", tmp_path / "artifact")
    assert code == 0, err
    from runtime.embedder import load_artifact_embedder

    embedder = load_artifact_embedder(tmp_path / "artifact", "cpu", "fp32", threads=1, inter_threads=1)
    out = embedder.embed_output([walking_sequence(1, frames=12)])
    model, _ = load_checkpoint(newest)
    with torch.no_grad():
        expected = model(torch.from_numpy(walking_sequence(1, frames=12)[None] / 255.0).float()).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_fp32_and_bf16_runs_follow_the_same_loss_curve(
    tmp_path: Path, walkers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from train.run import cpu_has_bf16

    if not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 / AMX): a CPU run there is fp32")
    curves = {}
    for precision in ("fp32", "bf16"):
        values = json.loads(tiny_config(tmp_path, max_steps=20).read_text())
        values["trainer"].update(precision=precision, deterministic=False, log_every=10)
        config = tmp_path / f"{precision}.yaml"
        config.write_text(json.dumps(values))
        assert run_cli(capsys, *train_args(config, walkers, tmp_path / precision)).code == 0
        curves[precision] = [m["loss"] for m in metrics(tmp_path / precision)]
    # The same descent (bf16 rounding moves each step a little; the curves' shape is what must hold).
    drops = {p: c[-1] / c[0] for p, c in curves.items()}
    assert drops["bf16"] < 0.8 and abs(drops["bf16"] - drops["fp32"]) < 0.15, curves
    ckpt = torch.load(list_checkpoints(tmp_path / "bf16")[-1][1], weights_only=True)
    assert ckpt["config"]["trainer"]["precision"] == "bf16"


@pytest.mark.parametrize(
    ("asked", "device", "native", "runs"),
    [
        ("auto", "cpu", True, "bf16"),
        ("auto", "cpu", False, "fp32"),
        ("bf16", "cpu", False, "fp32"),
        ("fp16", "cpu", True, "fp32"),
        ("fp32", "cpu", True, "fp32"),
        ("auto", "cuda", False, "fp16"),
        ("bf16", "cuda", False, "bf16"),
    ],
)
def test_precision_as_each_device_runs_it(
    monkeypatch: pytest.MonkeyPatch, asked: str, device: str, native: bool, runs: str
) -> None:
    from train import run
    from train.config import TrainerConfig

    monkeypatch.setattr(run, "cpu_has_bf16", lambda: native)  # the CPU's flags, as another host has them
    trainer = TrainerConfig(precision=asked, channels_last=True, compile=True)  # type: ignore[arg-type]
    resolved = run.effective_trainer(trainer, torch.device(device))
    assert resolved.precision == runs
    assert resolved.channels_last and resolved.compile == (device == "cuda")


def test_yaml_text_is_read_as_its_config(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        textwrap.dedent("""
        model: {architecture: gaitset, config: {channels: [4, 4, 4], fc_dim: 4}}
        loss: {ce_weight: 0.0}
        optimizer: {solver: adam, lr: 0.001}
    """)
    )
    loaded = load_config(config, SupervisedConfig)
    assert loaded.optimizer.solver == "adam" and loaded.loss.ce_weight == 0.0
    assert type(initial_network(loaded, None)).__name__ == "GaitSet"


TINY_NETWORKS = {
    "gaitbase": TINY_GAITBASE,
    "deepgaitv2": {"mode": "p3d", "channels": [4, 8, 8, 8], "layers": [1, 1, 1, 1]},
    "gaitset": {"channels": [4, 4, 4], "fc_dim": 4},
    "gaitgl": {"channels": [4, 4, 4]},
    "gaitssb": {"channels": [4, 8, 8, 8], "form": "finetune"},
}


@pytest.mark.parametrize("architecture", sorted(TINY_NETWORKS))
def test_one_command_trains_every_registered_architecture(
    tmp_path: Path, walkers: Path, capsys: pytest.CaptureFixture[str], architecture: str
) -> None:
    values = json.loads(tiny_config(tmp_path, max_steps=2).read_text())
    values["model"] = {"architecture": architecture, "config": TINY_NETWORKS[architecture]}
    config = tmp_path / "arch.yaml"
    config.write_text(json.dumps(values))
    code, _, err = run_cli(capsys, *train_args(config, walkers, tmp_path / "run"))
    assert code == 0, err
    torch.manual_seed(0)  # the run's initial weights (trainer.seed)
    before = build_network(architecture, TINY_NETWORKS[architecture]).state_dict()
    trained, ckpt = load_checkpoint(list_checkpoints(tmp_path / "run")[-1][1])
    assert ckpt["architecture"] == architecture and ckpt["step"] == 2
    assert any(
        not torch.equal(v, trained.state_dict()[k]) for k, v in before.items() if v.is_floating_point()
    )


@pytest.mark.parametrize("architecture", sorted(TINY_NETWORKS))
def test_channels_last_converts_every_architecture_and_keeps_its_output(architecture: str) -> None:
    torch.manual_seed(0)
    network = build_network(architecture, TINY_NETWORKS[architecture]).eval()
    x = torch.rand(2, 6, 64, 44)
    with torch.no_grad():
        expected = network(x)
        got = to_channels_last(network)(x)  # DeepGaitV2's P3D mixes 2-D and 3-D convolutions
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    convs = [m for m in network.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
    assert convs
    for conv in convs:
        layout = torch.channels_last_3d if isinstance(conv, nn.Conv3d) else torch.channels_last
        assert conv.weight.is_contiguous(memory_format=layout)

"""Fine-tuning: P x K sampling, the batch-all triplet loss, freezing, `gaitlu train finetune` end to end."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from gaitlu.errors import ConfigError, DataError
from gaitlu.labelled import LabelledSequence
from tests.support.cli import gaitlu_argv, run_cli
from train.checkpoint import atomic_save, build_checkpoint, list_checkpoints, load_checkpoint
from train.config import build_config, replace
from train.finetune import (
    FinetuneConfig,
    LearningRates,
    finetune,
    finetune_model,
    head_embeddings,
    param_groups,
    train_mode,
)
from train.losses import batch_all_triplet
from train.model import GaitSSB, ModelConfig
from train.sampler import ClipRequest, LabelledClips, PKBatchSampler, sample_frames
from train.zoo.gaitbase import GaitBaseConfig
from train.zoo.registry import build_network

REPO = Path(__file__).resolve().parents[1]

TINY = ModelConfig(channels=(4, 8, 8, 8), form="pretrain")
CONDS = ("nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02")
VIEWS = ("000", "090")


def write_tree(root: Path, train: int = 4, test: int = 3, frames: int = 6) -> Path:
    """A CASIA-B-shaped labelled tree: each subject is its own random 64x64 pattern with a few
    flipped pixels per frame. Subject 001 lacks two sequences, as real datasets do."""
    rng = np.random.default_rng(0)
    subjects = [f"{i:03d}" for i in range(1, train + 1)] + [f"{i:03d}" for i in range(75, 75 + test)]
    for subject in subjects:
        pattern = rng.random((64, 64)) < 0.3
        for cond in CONDS:
            for view in VIEWS:
                if subject == "001" and cond in ("bg-02", "cl-02") and view == "090":
                    continue
                flips = rng.random((frames, 64, 64)) < 0.02
                folder = root / subject / cond / view
                folder.mkdir(parents=True)
                seq = ((pattern[None] ^ flips) * 255).astype(np.uint8)  # (T, 64, 64)
                (folder / "sils.pkl").write_bytes(pickle.dumps(seq, protocol=4))
    split = {"TRAIN_SET": subjects[:train], "TEST_SET": subjects[train:]}
    (root / "partition.json").write_text(json.dumps(split))
    return root


def pretrain_checkpoint(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return atomic_save(build_checkpoint(GaitSSB(TINY), {}, step=100), path)


TINY_FINETUNE = """
data: {subjects_per_batch: 3, sequences_per_subject: 4, frames: 5, num_workers: 0}
lr: {backbone: [0.0, 0.001, 0.001, 0.001], projector: 0.01, floor: 0.0001}
optimizer: {lr: 0.1, momentum: 0.9, weight_decay: 0.0005}
scheduler: {milestones: [2], gamma: 0.1}
trainer: {max_steps: 4, checkpoint_every: 2, keep_last: 5, log_every: 1, seed: 0, precision: fp32}
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tree(tmp_path_factory.mktemp("labelled") / "data")


# --- P x K sampling ---------------------------------------------------------------------------------


def test_pk_batches_hold_p_subjects_times_k_sequences() -> None:
    subjects = ["a"] * 6 + ["b"] * 5 + ["c"] * 2 + ["d"] * 7  # c has fewer than K
    sampler = PKBatchSampler(subjects, p=3, k=4, seed=1)
    for step in range(20):
        batch = sampler.batch(step)
        per_subject = Counter(subjects[r.index] for r in batch)
        assert len(per_subject) == 3 and set(per_subject.values()) == {4}
        for subject in per_subject:
            chosen = [r.index for r in batch if subjects[r.index] == subject]
            if subject != "c":
                assert len(set(chosen)) == 4  # without replacement when there are enough
    assert any("c" in {subjects[r.index] for r in sampler.batch(s)} for s in range(20))


def test_pk_batches_are_deterministic_by_seed_and_step() -> None:
    subjects = [str(i % 5) for i in range(40)]
    a = PKBatchSampler(subjects, 2, 3, seed=7)
    b = PKBatchSampler(subjects, 2, 3, seed=7, start_step=3)
    first = [batch for batch, _ in zip(a, range(6), strict=False)]
    assert next(iter(b)) == first[3]  # a resumed stream continues where the first left off
    assert a.batch(0) != PKBatchSampler(subjects, 2, 3, seed=8).batch(0)


def test_pk_sampling_refuses_too_few_subjects() -> None:
    with pytest.raises(DataError, match="P=3"):
        PKBatchSampler(["a", "a", "b"], p=3, k=2)


def test_frame_draws_are_sorted_and_repeat_only_when_short() -> None:
    rng = np.random.default_rng(0)
    long = sample_frames(100, 30, rng)
    assert len(long) == 30 and len(set(long)) == 30 and (np.diff(long) > 0).all()
    short = sample_frames(7, 30, rng)
    assert len(short) == 30 and set(short) <= set(range(7)) and (np.diff(short) >= 0).all()


def test_unreadable_sequence_is_replaced_by_one_of_the_same_subject(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "data", train=2, test=1)
    broken = root / "001" / "nm-01" / "000" / "sils.pkl"
    broken.write_bytes(b"not a pickle")
    sequences = [LabelledSequence(root / "001" / c / "000", "001", c, "000") for c in ("nm-01", "nm-02")]
    clips = LabelledClips(sequences, frames=5)
    clip, label = clips[ClipRequest(index=0, seed=3)]  # sequence 0 is the broken one
    assert clip.shape == (5, 64, 44) and label == 0


# --- the triplet loss --------------------------------------------------------------------------------


def naive_triplet(emb: torch.Tensor, labels: list[int], margin: float) -> torch.Tensor:
    """Loop over parts and every (anchor, positive incl. the anchor itself, negative) triplet."""
    per_part = []
    n = len(labels)
    for p in range(emb.shape[2]):
        x = emb[:, :, p]
        terms = []
        for a in range(n):
            for pos in range(n):
                for neg in range(n):
                    if labels[pos] == labels[a] and labels[neg] != labels[a]:
                        d_ap = (
                            (x[a] - x[pos]).pow(2).sum().clamp(min=0).sqrt() if pos != a else x.new_zeros(())
                        )
                        d_an = (x[a] - x[neg]).pow(2).sum().sqrt()
                        terms.append(torch.relu(d_ap - d_an + margin))
        terms_t = torch.stack(terms)
        nonzero = terms_t[terms_t > 0]
        per_part.append(nonzero.mean() if len(nonzero) else terms_t.sum() * 0)
    return torch.stack(per_part).mean()


def test_triplet_loss_and_gradient_match_a_naive_loop() -> None:
    g = torch.Generator().manual_seed(0)
    labels = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    emb = torch.randn(9, 5, 2, generator=g, dtype=torch.float64) * 0.3
    emb_a, emb_b = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    loss, _ = batch_all_triplet(emb_a, torch.tensor(labels), margin=0.3)
    expected = naive_triplet(emb_b, labels, margin=0.3)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(emb_a.grad, emb_b.grad)
    assert emb_a.grad.abs().sum() > 0


def test_triplet_loss_is_zero_when_every_margin_holds_and_accuracy_is_perfect() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    emb = torch.zeros(4, 2, 3)
    emb[2:, 0] = 10.0  # classes 10 apart, members identical
    loss, accuracy = batch_all_triplet(emb, labels, margin=0.3)
    assert loss.item() == 0.0 and accuracy.item() == 1.0


def test_triplet_loss_refuses_unbalanced_labels() -> None:
    with pytest.raises(ValueError, match="equally often"):
        batch_all_triplet(torch.randn(5, 4, 2), torch.tensor([0, 0, 0, 1, 1]))


# --- freezing and learning rates ---------------------------------------------------------------------


@pytest.mark.slow
def test_frozen_stem_stage_and_bn_statistics_stay_unchanged(tmp_path: Path) -> None:
    ckpt = torch.load(pretrain_checkpoint(tmp_path / "init.pt"), weights_only=True)
    model = finetune_model(ckpt)
    lrs = LearningRates(backbone=(0.0, 1e-2, 1e-2, 1e-2), projector=1e-2)
    groups = param_groups(model, lrs, head_lr=0.1)
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("stage2", 1e-2),
        ("stage3", 1e-2),
        ("stage4", 1e-2),
        ("projector", 1e-2),
        ("head", 0.1),
    ]
    grouped = {id(p) for g in groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert grouped == trainable

    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    train_mode(model)
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    for _ in range(3):
        clips = (torch.rand(6, 4, 64, 44, generator=g) > 0.5).float()
        loss, _ = batch_all_triplet(head_embeddings(model, clips), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    frozen = [k for k in before if k.startswith(("backbone.conv1.", "backbone.bn1.", "backbone.layers.0."))]
    statistics = [k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert frozen and statistics
    for key in frozen + statistics:
        assert torch.equal(before[key], after[key]), key
    for key in (
        "backbone.layers.1.conv1.weight",
        "backbone.layers.3.bn2.weight",
        "projector.0.weight",
        "head.weight",
    ):
        assert not torch.equal(before[key], after[key]), key


def test_init_keeps_encoder_and_projector_and_drops_the_predictor(tmp_path: Path) -> None:
    ckpt = torch.load(pretrain_checkpoint(tmp_path / "init.pt"), weights_only=True)
    model = finetune_model(ckpt)
    assert model.config.form == "finetune" and model.predictor is None
    state = model.state_dict()
    for key, value in ckpt["model"].items():
        if not key.startswith("predictor."):
            assert torch.equal(state[key], value), key


def test_a_stage_cannot_train_before_a_frozen_one() -> None:
    with pytest.raises(ConfigError, match="before a frozen stage"):
        LearningRates(backbone=(1e-3, 0.0, 1e-3, 1e-3))


def test_shipped_configs_load_and_follow_opengait() -> None:
    configs = Path(__file__).resolve().parents[1] / "configs"
    casiab = build_config(FinetuneConfig, _yaml(configs / "finetune_casiab.yaml"))
    assert (casiab.data.subjects_per_batch, casiab.data.sequences_per_subject, casiab.data.frames) == (
        8,
        16,
        30,
    )
    assert casiab.lr.backbone == (0.0, 1e-3, 1e-3, 1e-3) and casiab.optimizer.lr == 0.1
    for name in ("oumvlp", "grew", "gait3d", "tiny"):
        build_config(FinetuneConfig, _yaml(configs / f"finetune_{name}.yaml"))


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


# --- the command line ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_finetune_cli_end_to_end_then_eval(
    tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init = pretrain_checkpoint(tmp_path / "init.pt")
    config = tmp_path / "ft.yaml"
    config.write_text(textwrap.dedent(TINY_FINETUNE))
    out = tmp_path / "run"
    args = ["train", "finetune", "--config", str(config), "--init", str(init), "--dataset", str(dataset)]
    args += ["--partition", str(dataset / "partition.json"), "--out", str(out), "--device", "cpu"]
    code, _, err = run_cli(capsys, *args, "--max-steps", "2")
    assert code == 0, err
    assert [step for step, _ in list_checkpoints(out)] == [2]

    code, _, err = run_cli(capsys, *args, "--resume")  # continues to trainer.max_steps = 4
    assert code == 0, err
    ((_, last),) = [c for c in list_checkpoints(out) if c[0] == 4]
    model, ckpt = load_checkpoint(last)
    assert model.config.form == "finetune" and ckpt["step"] == 4
    assert ckpt["config"]["trainer"]["max_steps"] == 4
    init_model, _ = load_checkpoint(init)
    assert torch.equal(model.backbone.conv1.weight, init_model.backbone.conv1.weight)  # frozen stem
    assert not torch.equal(model.backbone.layers[1].conv1.weight, init_model.backbone.layers[1].conv1.weight)
    assert (out / "metrics.jsonl").is_file()

    code, stdout, err = run_cli(
        capsys,
        "eval",
        "--dataset",
        str(dataset),
        "--protocol",
        "casia-b",
        "--checkpoint",
        str(last),
        "--json",
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result["embedding_shape"] == [31, 8]
    assert set(result["result"]["headline"]) == {"NM", "BG", "CL"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"init": "missing.pt"}, "checkpoint not found"),
        ({"dataset": "nowhere"}, "dataset folder not found"),
        ({"partition": "nowhere.json"}, "partition file not found"),
        ({"config_text": "trainer: {max_step: 3}\n"}, "trainer.max_step: unknown key"),
        ({"config_text": "data: {subjects_per_batch: 9}\n"}, "fewer than data.subjects_per_batch"),
    ],
)
def test_bad_inputs_fail_before_work_with_a_clear_message(
    tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str], change: dict, message: str
) -> None:
    init = pretrain_checkpoint(tmp_path / "init.pt")
    config = tmp_path / "ft.yaml"
    config.write_text(change.get("config_text", textwrap.dedent(TINY_FINETUNE)))
    paths = {"init": init, "dataset": dataset, "partition": dataset / "partition.json"}
    paths.update({k: tmp_path / v for k, v in change.items() if k in paths})
    args = ["train", "finetune", "--config", str(config), "--out", str(tmp_path / "run")]
    args += [item for key in ("init", "dataset", "partition") for item in (f"--{key}", str(paths[key]))]
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not list_checkpoints(tmp_path / "run")


def test_an_init_of_another_architecture_is_refused_naming_what_init_takes(
    tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An imported OpenGait zoo model (here GaitBase) is not a GaitSSB: say so, not "unknown keys"."""
    gaitbase = build_network("gaitbase", GaitBaseConfig(channels=(4, 8, 8, 8), fc_dim=8))
    init = atomic_save(build_checkpoint(gaitbase, {}, step=0), tmp_path / "gaitbase.pt")
    config = tmp_path / "ft.yaml"
    config.write_text(textwrap.dedent(TINY_FINETUNE))
    code, _, err = run_cli(
        capsys,
        *("train", "finetune", "--config", str(config), "--init", str(init), "--dataset", str(dataset)),
        *("--partition", str(dataset / "partition.json"), "--out", str(tmp_path / "run")),
    )
    assert code == 2
    assert "holds a gaitbase model" in err and "starts from a GaitSSB checkpoint" in err
    assert "import-opengait" in err and "unknown key" not in err and "Traceback" not in err
    assert not list_checkpoints(tmp_path / "run")


# --- the shared loop: resume, SIGTERM, divergence -------------------------------------------------------


def finetune_args(
    tmp_path: Path, dataset: Path, init: Path, out: Path, config_text: str = TINY_FINETUNE
) -> list[str]:
    config = tmp_path / "ft.yaml"
    config.write_text(textwrap.dedent(config_text))
    args = ["train", "finetune", "--config", str(config), "--init", str(init), "--dataset", str(dataset)]
    return [*args, "--partition", str(dataset / "partition.json"), "--out", str(out), "--device", "cpu"]


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_if_exists_reproduces_the_uninterrupted_trajectory(
    tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init = pretrain_checkpoint(tmp_path / "init.pt")
    full, split = tmp_path / "full", tmp_path / "split"
    assert (
        run_cli(capsys, *finetune_args(tmp_path, dataset, init, full))[0] == 0
    )  # 4 steps, LR milestone at 2
    args = [*finetune_args(tmp_path, dataset, init, split), "--resume-if-exists"]
    assert run_cli(capsys, *args, "--max-steps", "2")[0] == 0  # nothing to resume: starts
    assert [step for step, _ in list_checkpoints(split)] == [2]
    code, out, err = run_cli(capsys, *args)  # the same command again: continues from step 2 to 4
    assert code == 0, err
    assert "step-00000004.pt" in out
    assert len(losses(split)) == 4
    np.testing.assert_allclose(losses(split), losses(full), rtol=1e-5, atol=1e-5)
    a, _ = load_checkpoint(list_checkpoints(full)[-1][1])
    b, _ = load_checkpoint(list_checkpoints(split)[-1][1])
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, msg=name, rtol=1e-5, atol=1e-6)


def test_resume_refuses_other_clips_or_loss_in_one_message(tmp_path: Path, dataset: Path) -> None:
    init = pretrain_checkpoint(tmp_path / "init.pt")
    config = build_config(FinetuneConfig, _yaml_text(TINY_FINETUNE))
    finetune(config, init, dataset, dataset / "partition.json", tmp_path / "run", device="cpu")
    other = replace(
        config,
        data=replace(config.data, frames=7, num_workers=1),  # workers may change, frames not
        loss=replace(config.loss, margin=0.2),
        trainer=replace(config.trainer, max_steps=6),
    )
    with pytest.raises(ConfigError) as caught:
        finetune(
            other, init, dataset, dataset / "partition.json", tmp_path / "run", resume="yes", device="cpu"
        )
    message = str(caught.value)
    assert "data.frames: 5 in the checkpoint, 7 here" in message and "loss.margin: 0.3" in message
    assert "num_workers" not in message and "max_steps" not in message


def test_a_diverging_run_stops_with_a_message_and_keeps_only_finite_checkpoints(
    tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init = pretrain_checkpoint(tmp_path / "init.pt")
    huge = TINY_FINETUNE.replace(
        "lr: {backbone: [0.0, 0.001, 0.001, 0.001], projector: 0.01, floor: 0.0001}",
        "lr: {backbone: [0.0, 1.0e+6, 1.0e+6, 1.0e+6], projector: 1.0e+6, floor: 0.0}",
    )
    huge = huge.replace("optimizer: {lr: 0.1", "optimizer: {lr: 1.0e+6").replace(
        "checkpoint_every: 2", "checkpoint_every: 1"
    )
    assert huge.count("1.0e+6") == 5
    code, _, err = run_cli(capsys, *finetune_args(tmp_path, dataset, init, tmp_path / "run", huge))
    assert code == 2
    assert "error: the loss of step 2 is nan: training stopped without saving it" in err
    assert "Traceback" not in err
    assert [step for step, _ in list_checkpoints(tmp_path / "run")] == [1]  # step 1's, and nothing after
    model, _ = load_checkpoint(list_checkpoints(tmp_path / "run")[0][1])
    assert all(t.isfinite().all() for t in model.state_dict().values() if t.is_floating_point())


@pytest.mark.slow
def test_sigterm_checkpoints_and_a_resume_reproduces_the_uninterrupted_run(
    tmp_path: Path, dataset: Path
) -> None:
    init = pretrain_checkpoint(tmp_path / "init.pt")
    long_run = TINY_FINETUNE.replace(
        "max_steps: 4, checkpoint_every: 2", "max_steps: 100000, checkpoint_every: 100000"
    )
    long_run = long_run.replace(
        "num_workers: 0", "num_workers: 1"
    )  # a data worker must not die of the signal
    run_dir = tmp_path / "run"
    args = finetune_args(tmp_path, dataset, init, run_dir, long_run)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Its own session, so the signal goes to the whole process group (data worker too), as schedulers do.
    cli = gaitlu_argv(*args)
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        proc = subprocess.Popen(cli, cwd=REPO, env=env, start_new_session=True, stderr=stderr)
        try:
            deadline = time.monotonic() + 120
            while not (run_dir / "metrics.jsonl").is_file() or not (run_dir / "metrics.jsonl").read_text():
                assert proc.poll() is None and time.monotonic() < deadline, "fine-tuning did not start"
                time.sleep(0.1)
            # The test process ignores SIGTERM while it signals the child's group: in full xdist runs the
            # worker running this test was found terminated by it.
            previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                os.killpg(os.getpgid(proc.pid), signal.SIGTERM)
            finally:
                signal.signal(signal.SIGTERM, previous)
            assert proc.wait(timeout=60) == 143, (
                log.read_text()
            )  # checkpointed, "interrupted" for the scheduler
        finally:
            proc.kill()
    err = log.read_text()
    stopped_at = losses_steps(run_dir)[-1]
    assert [step for step, _ in list_checkpoints(run_dir)] == [stopped_at]  # saved where it stopped
    assert f"stopped by SIGTERM at step {stopped_at}; continue with --resume" in err

    # The resume and the uninterrupted run go through the command line in child processes too, as a
    # scheduler would run them (a test process that earlier tests left with threads and runtimes loaded
    # is not what this test is about).
    target = str(stopped_at + 2)
    for out, extra in ((run_dir, ["--resume"]), (tmp_path / "full", [])):
        command = gaitlu_argv(
            *finetune_args(tmp_path, dataset, init, out, long_run), *extra, "--max-steps", target
        )
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(losses(run_dir), losses(tmp_path / "full"), rtol=1e-5, atol=1e-5)
    (resumed_step, resumed_path), (full_step, full_path) = (
        list_checkpoints(d)[-1] for d in (run_dir, tmp_path / "full")
    )
    assert resumed_step == full_step == stopped_at + 2
    resumed, _ = load_checkpoint(resumed_path)
    full, _ = load_checkpoint(full_path)
    for (name, x), y in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, msg=name, rtol=1e-5, atol=1e-6)


def losses_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _yaml_text(text: str) -> dict:
    import yaml

    return yaml.safe_load(textwrap.dedent(text))

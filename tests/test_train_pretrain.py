"""GaitSSB pretraining: the loss, the data stream, checkpoints, resume, SIGTERM, errors, and DDP on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader

from corpus.reader import open_corpus
from gaitlu.errors import ConfigError, DataError
from gaitlu.safepickle import dumps_array
from tests.support.cli import run_cli
from tests.support.ports import free_port
from tests.support.walkers import walking_sequence
from train import checkpoint, distributed
from train.augment import AugmentConfig
from train.config import config_to_dict, replace
from train.data import PretrainStream
from train.losses import gaitssb_loss, part_contrastive
from train.pretrain import (
    ContrastiveLossConfig,
    PretrainConfig,
    check_config,
    global_batch_loss,
    load_pretrain_config,
    train,
)
from train.run import DivergedError

REPO = Path(__file__).resolve().parent.parent
TINY_YAML = REPO / "configs" / "gaitssb_tiny.yaml"


def tiny_config(**trainer: object) -> PretrainConfig:
    """The tiny YAML shrunk for tests: 4 sequences per step, in-process data, deterministic fp32."""
    config = load_pretrain_config(TINY_YAML)
    model = replace(config.model, channels=(4, 8, 8, 16))  # narrower still: tests only run
    data = replace(config.data, global_batch=4, num_workers=0)
    settings = {"log_every": 1, "checkpoint_every": 100, "deterministic": True, **trainer}
    trainer_config = replace(config.trainer, **settings)
    return replace(config, model=model, data=data, trainer=trainer_config)


def write_blob_tree(root: Path, n: int, seed: int = 0) -> None:
    """`n` walking sequences (12-29 frames of 64x44) as a silhouette_cut_pkl tree."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        frames = walking_sequence(1000 * seed + i, int(rng.integers(12, 30)))  # (T, 64, 44)
        folder = root / "silhouette_cut_pkl" / "000" / "000" / f"{i:03d}"
        folder.mkdir(parents=True)
        (folder / f"000_000_{i:03d}.pkl").write_bytes(dumps_array(frames))


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny convolutions gain nothing from threads, and on a shared 2-core machine (or under pytest -n 2)
    two OpenMP threads waiting on each other ran these steps several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_blob_tree(root, 10)  # 10 sequences: 2 steps of 4 per epoch (2 dropped, per epoch)
    return root


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------- loss


def naive_loss(p: torch.Tensor, z: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """One part at a time, cosine by F.cosine_similarity, label smoothing written out."""
    losses = []
    for part in range(p.shape[2]):
        cos = F.cosine_similarity(p[:, :, part, None], z[:, :, part].T[None], dim=1)  # (N, M)
        logp = F.log_softmax(16 * cos, dim=1)
        nll = -logp[torch.arange(len(p)), positives]
        losses.append((0.9 * nll - 0.1 * logp.mean(dim=1)).mean())
    return torch.stack(losses).mean()


def test_contrastive_loss_matches_a_per_part_loop() -> None:
    g = torch.Generator().manual_seed(0)
    p_a, p_b = torch.randn(2, 5, 8, 31, generator=g)  # (N, C, P) each
    z_a, z_b = torch.randn(2, 12, 8, 31, generator=g)  # a "global batch" of 12; ours are rows 4..8
    loss, _ = gaitssb_loss(p_a, p_b, z_a, z_b, offset=4)
    positives = torch.arange(4, 9)
    expected = naive_loss(p_a, z_b, positives) + naive_loss(p_b, z_a, positives)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_no_gradient_reaches_the_target_branch() -> None:
    g = torch.Generator().manual_seed(1)
    p_a, p_b, z_a, z_b = (torch.randn(6, 4, 31, generator=g).requires_grad_() for _ in range(4))
    loss, _ = gaitssb_loss(p_a, p_b, z_a, z_b)
    loss.backward()
    assert z_a.grad is None and z_b.grad is None
    assert p_a.grad is not None and p_a.grad.abs().sum() > 0


def test_accuracy_counts_queries_whose_positive_scores_highest() -> None:
    z = F.normalize(torch.randn(8, 16, 31), dim=1)
    pred = z.clone()
    pred[[1, 6]] = z[[6, 1]]  # queries 1 and 6 now point at each other's targets: wrong in every part
    loss, accuracy = part_contrastive(pred, z, torch.arange(8))
    assert accuracy.item() == pytest.approx(6 / 8)
    _, perfect = part_contrastive(z, z, torch.arange(8))
    assert perfect.item() == 1.0
    assert loss > part_contrastive(z, z, torch.arange(8))[0]


# ---------------------------------------------------------------------------------------------- data


def test_each_step_takes_distinct_sequences_and_ranks_split_the_same_global_batch(corpus_dir: Path) -> None:
    corpus = open_corpus(corpus_dir)
    world1 = iter(PretrainStream(corpus, global_batch=4, seed=3))
    ranks = [iter(PretrainStream(corpus, global_batch=4, seed=3, rank=r, world_size=2)) for r in range(2)]
    seen = []
    for _ in range(2):  # one epoch: 2 steps
        whole = next(world1).indices
        halves = [next(r).indices for r in ranks]
        assert len(set(whole.tolist())) == 4
        assert sorted(torch.cat(halves).tolist()) == sorted(whole.tolist())
        seen += whole.tolist()
    assert len(set(seen)) == 8  # no sequence twice in an epoch
    assert next(world1).epoch == 1


def test_stream_is_the_same_for_any_number_of_workers_and_resumes_mid_epoch(corpus_dir: Path) -> None:
    from train.data import DataPosition

    corpus = open_corpus(corpus_dir)
    stream = PretrainStream(corpus, global_batch=4, seed=0)
    alone = [b for b, _ in zip(stream, range(5), strict=False)]
    workers = DataLoader(stream, batch_size=None, num_workers=2)
    pooled = [b for b, _ in zip(workers, range(5), strict=False)]
    resumed = PretrainStream(corpus, global_batch=4, seed=0, start=DataPosition(epoch=1, sequences=4))
    for a, b in zip(alone, pooled, strict=True):
        assert (a.epoch, a.batch) == (b.epoch, b.batch)
        torch.testing.assert_close(a.view_a, b.view_a)
        torch.testing.assert_close(a.view_b, b.view_b)
    first = next(iter(resumed))  # epoch 1, batch 1 is the 4th batch of the stream
    assert (first.epoch, first.batch) == (1, 1)
    torch.testing.assert_close(first.view_a, alone[3].view_a)
    assert first.view_a.shape == (4, 16, 64, 44) and first.view_a.dtype == torch.float32
    assert not torch.equal(first.view_a, first.view_b)  # two different clips


# ------------------------------------------------------------------------------- checkpoints and runs


def test_resume_continues_the_exact_loss_trajectory(corpus_dir: Path, tmp_path: Path) -> None:
    config = tiny_config()
    full = train(config, corpus_dir, tmp_path / "full", device="cpu", max_steps=5)
    first = train(config, corpus_dir, tmp_path / "split", device="cpu", max_steps=3)
    assert first.step == 3 and first.checkpoint is not None
    second = train(config, corpus_dir, tmp_path / "split", resume="yes", device="cpu", max_steps=5)
    assert second.step == 5
    losses_full = [m["loss"] for m in read_metrics(tmp_path / "full")]
    losses_split = [m["loss"] for m in read_metrics(tmp_path / "split")]
    assert len(losses_full) == len(losses_split) == 5
    np.testing.assert_allclose(losses_split, losses_full, rtol=1e-5, atol=1e-5)
    for (name, a), b in zip(full.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name, rtol=1e-5, atol=1e-6)


def test_checkpoint_holds_a_bare_model_and_loads_back(corpus_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(checkpoint_every=1, keep_last=2)
    result = train(config, corpus_dir, tmp_path, device="cpu", max_steps=3)
    assert [step for step, _ in checkpoint.list_checkpoints(tmp_path)] == [2, 3]  # keep_last=2 pruned 1
    assert not list((tmp_path / checkpoint.CHECKPOINT_DIR).glob(".*"))  # no temp files left behind
    model, ckpt = checkpoint.load_checkpoint(result.checkpoint)
    assert ckpt["format"] == checkpoint.FORMAT and ckpt["step"] == 3
    assert ckpt["data"] == {"epoch": 1, "sequences": 4}  # 2 steps per epoch: step 3 is epoch 1's first
    assert ckpt["config"]["trainer"]["max_steps"] == 3  # the resolved config, CLI override applied
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
    assert not model.training
    x = torch.rand(2, 8, 64, 44)
    with torch.no_grad():
        torch.testing.assert_close(model(x), result.model.eval()(x))
    # A compiled wrapper (compilation happens lazily, so wrapping is free) still saves bare keys.
    compiled = checkpoint.build_checkpoint(torch.compile(model), {}, step=0)
    assert compiled["model"].keys() == ckpt["model"].keys()


def test_a_foreign_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    torch.save({"model": {}, "iteration": 3}, tmp_path / "opengait.pt")
    with pytest.raises(DataError, match="import-opengait"):
        checkpoint.load_checkpoint(tmp_path / "opengait.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a readable checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "junk.pt")


@pytest.mark.slow
def test_sigterm_checkpoints_the_step_and_exits_as_interrupted(corpus_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(
        TINY_YAML.read_text()
        .replace("global_batch: 32", "global_batch: 4")
        .replace("log_every: 10", "log_every: 1")
    )
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "train.pretrain", "--config", str(config), "--data", str(corpus_dir)]
    # Its own session, so the signal goes to the whole process group (data workers too), as schedulers do.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*cmd, "--out", str(run), "--device", "cpu"], cwd=REPO, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        # The test process ignores SIGTERM while it signals the child's group: in full xdist runs a worker
        # running such a test was found terminated by it.
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            os.killpg(os.getpgid(proc.pid), signal.SIGTERM)
        finally:
            signal.signal(signal.SIGTERM, previous)
        assert proc.wait(timeout=60) == 143  # checkpointed, and "interrupted" for the scheduler
    finally:
        proc.kill()
    last_logged = read_metrics(run)[-1]["step"]
    steps = [step for step, _ in checkpoint.list_checkpoints(run)]
    assert steps == [last_logged] and last_logged < 600  # saved where it stopped, long before the end
    resumed = train(
        load_pretrain_config(config), corpus_dir, run, resume="yes", device="cpu", max_steps=last_logged + 1
    )
    assert resumed.step == last_logged + 1


# -------------------------------------------------------------------------------------------- errors


def test_bad_config_or_data_fail_with_a_message_before_any_work(
    corpus_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_step: 10\n")
    pretrain = ("train", "pretrain", "--out", tmp_path / "run", "--device", "cpu")
    code, _, err = run_cli(capsys, *pretrain, "--config", bad, "--data", corpus_dir)
    assert code == 2 and "trainer.max_step: unknown key" in err
    code, _, err = run_cli(capsys, *pretrain, "--config", TINY_YAML, "--data", tmp_path / "missing")
    assert code == 2 and "no such corpus" in err
    # The tiny YAML's batch of 32 is more than this 10-sequence corpus holds.
    code, _, err = run_cli(capsys, *pretrain, "--config", TINY_YAML, "--data", corpus_dir)
    assert code == 2 and "fewer than one global batch" in err
    small = tmp_path / "small.yaml"
    small.write_text(TINY_YAML.read_text().replace("global_batch: 32", "global_batch: 4"))
    code, _, err = run_cli(capsys, *pretrain, "--config", small, "--data", corpus_dir, "--resume")
    assert code == 2 and "no checkpoint in" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_config_checks_values_the_types_cannot() -> None:
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        check_config(tiny_config(), world_size=3)
    with pytest.raises(ConfigError, match="at least 2 sequences"):
        check_config(tiny_config(), world_size=4)
    with pytest.raises(ConfigError, match=r"max_steps: input should be greater than 0"):
        check_config(tiny_config(max_steps=0), world_size=1)


def test_a_second_run_into_the_same_folder_is_refused(corpus_dir: Path, tmp_path: Path) -> None:
    train(tiny_config(), corpus_dir, tmp_path, device="cpu", max_steps=1)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(tiny_config(), corpus_dir, tmp_path, device="cpu", max_steps=2)
    wider = replace(tiny_config(), data=replace(tiny_config().data, global_batch=8))
    with pytest.raises(ConfigError, match="global_batch"):
        train(wider, corpus_dir, tmp_path, resume="yes", device="cpu", max_steps=2)


# ------------------------------------------------------------ resume modes, guards, augmentation


def test_resume_if_exists_starts_fresh_then_continues_the_same_trajectory(
    corpus_dir: Path, tmp_path: Path
) -> None:
    config = tiny_config()
    train(config, corpus_dir, tmp_path / "full", device="cpu", max_steps=4)
    run = tmp_path / "preemptible"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 9, "loss": 1.0}) + "\n")  # a crash before any save
    first = train(config, corpus_dir, run, resume="if-exists", device="cpu", max_steps=2)
    assert first.step == 2 and [m["step"] for m in read_metrics(run)] == [1, 2]  # fresh: the stale line went
    second = train(config, corpus_dir, run, resume="if-exists", device="cpu", max_steps=4)
    assert second.step == 4
    np.testing.assert_allclose(
        [m["loss"] for m in read_metrics(run)],
        [m["loss"] for m in read_metrics(tmp_path / "full")],
        rtol=1e-5,
        atol=1e-5,
    )


def test_the_resume_flags_are_exclusive_on_the_command_line(
    corpus_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--config", str(TINY_YAML), "--data", str(corpus_dir), "--out", str(tmp_path), "--device", "cpu"]
    assert run_cli(None, "train", "pretrain", *args, "--resume", "--resume-if-exists").code == 2
    assert "not both" in capsys.readouterr().err


def rewrite_checkpoint(path: Path, **changes: object) -> None:
    ckpt = torch.load(path, weights_only=True)
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        target = ckpt
        for name in parents:
            target = target[name]
        target[key] = value
    checkpoint.atomic_save(ckpt, path)


def test_resuming_a_gpu_fp16_checkpoint_on_the_cpu_is_a_message_not_a_traceback(
    corpus_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = tmp_path / "small.yaml"
    small.write_text(TINY_YAML.read_text().replace("global_batch: 32", "global_batch: 4"))
    args = [
        "--config",
        str(small),
        "--data",
        str(corpus_dir),
        "--out",
        str(tmp_path / "run"),
        "--device",
        "cpu",
    ]
    assert run_cli(None, "train", "pretrain", *args, "--max-steps", "1").code == 0
    # What a CUDA fp16 run writes: its resolved precision, and the state of an enabled grad scaler.
    (path,) = [p for _, p in checkpoint.list_checkpoints(tmp_path / "run")]
    rewrite_checkpoint(
        path, config__trainer__precision="fp16", scaler=torch.amp.GradScaler("cpu").state_dict()
    )
    capsys.readouterr()
    assert run_cli(None, "train", "pretrain", *args, "--resume", "--max-steps", "2").code == 2
    err = capsys.readouterr().err
    assert "trainer.precision: fp16 in the checkpoint, fp32 here (a CPU runs fp16 as fp32" in err
    assert "Traceback" not in err
    assert [step for step, _ in checkpoint.list_checkpoints(tmp_path / "run")] == [1]


def test_resuming_with_fewer_processes_than_trained_it_is_refused(corpus_dir: Path, tmp_path: Path) -> None:
    train(tiny_config(), corpus_dir, tmp_path, device="cpu", max_steps=1)
    rewrite_checkpoint(checkpoint.latest_checkpoint(tmp_path), world_size=2)
    with pytest.raises(ConfigError, match="processes: 2 trained it, this run has 1"):
        train(tiny_config(), corpus_dir, tmp_path, resume="yes", device="cpu", max_steps=2)


@pytest.mark.parametrize(
    ("lr", "log_every", "caught_by"),
    [
        (1e5, 1, "the loss of step 4 is nan"),  # read back at a log step
        (1e5, 100, "not finite at step 4"),  # between log steps: checked before the save
        (1e8, 1, "the loss or the weights are not finite at step 2"),  # finite loss, non-finite weights
    ],
)
def test_a_diverging_run_stops_with_a_message_and_leaves_only_finite_checkpoints(
    corpus_dir: Path, tmp_path: Path, lr: float, log_every: int, caught_by: str
) -> None:
    config = tiny_config(checkpoint_every=1, log_every=log_every, keep_last=10)
    config = replace(config, optimizer=replace(config.optimizer, lr=lr))
    with pytest.raises(DivergedError, match=caught_by) as caught:
        train(config, corpus_dir, tmp_path, device="cpu", max_steps=8)
    saved = checkpoint.list_checkpoints(tmp_path)
    assert saved and str(saved[-1][1]) in str(caught.value)  # it names the newest good checkpoint
    for _, path in saved:
        model, _ = checkpoint.load_checkpoint(path)
        assert all(t.isfinite().all() for t in model.state_dict().values() if t.is_floating_point())
    if log_every == 1:  # the non-finite loss was not written
        assert all(np.isfinite(m["loss"]) for m in read_metrics(tmp_path))


def test_augmentation_settings_shape_the_stream_and_are_saved(corpus_dir: Path, tmp_path: Path) -> None:
    plain = AugmentConfig(window=10, frames=8, p_affine=0, p_perspective=0, p_flip=0, p_dilate=0, p_blur=0)
    view = next(iter(PretrainStream(open_corpus(corpus_dir), global_batch=4, seed=0, augment=plain))).view_a
    assert view.shape == (4, 8, 64, 44)
    assert set(view.unique().tolist()) == {0.0, 1.0}  # the masks, only scaled: no warp or blur ran
    recipe = next(iter(PretrainStream(open_corpus(corpus_dir), global_batch=4, seed=0))).view_a
    assert recipe.shape == (4, 16, 64, 44)

    config = replace(tiny_config(), augment=plain)
    result = train(config, corpus_dir, tmp_path, device="cpu", max_steps=1)
    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert ckpt["config"]["augment"] == config_to_dict(plain)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["augment"]["frames"] == 8
    with pytest.raises(ConfigError, match=r"augment\.frames: 8 in the checkpoint, 16 here"):
        train(tiny_config(), corpus_dir, tmp_path, resume="yes", device="cpu", max_steps=2)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_on_cuda_the_host_waits_only_at_log_and_checkpoint_steps(
    corpus_dir: Path, tmp_path: Path, precision: str
) -> None:
    """Syncs counted by CUDA's sync debug mode: 3 and 9 steps with one log/checkpoint step each must
    sync equally often. (An enabled fp16 GradScaler reads its overflow flag every step by design.)"""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")

    def syncs(steps: int) -> int:
        config = tiny_config(precision=precision, log_every=1000, checkpoint_every=1000, deterministic=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train(config, corpus_dir, tmp_path / f"run{steps}", device="cuda", max_steps=steps)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(9) == syncs(3)


# ---------------------------------------------------------------------------------------------- DDP


def _ddp_rank(rank: int, world: int, ports: tuple[int, int], corpus_dir: Path, out: Path) -> None:
    """One of two gloo processes: check the gathered loss, then train a few steps with the real loop."""
    torch.set_num_threads(1)
    env = {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1"}
    os.environ.update(env, MASTER_PORT=str(ports[0]))
    info = distributed.setup("cpu")
    g = torch.Generator().manual_seed(0)  # every rank draws the same global tensors ...
    p_a, p_b, z_a, z_b = torch.randn(4, world * 3, 8, 31, generator=g)  # (world * N, C, P), N = 3
    mine = slice(rank * 3, rank * 3 + 3)  # ... and keeps its own rows, as after a forward
    loss, _ = global_batch_loss(z_a[mine], p_a[mine], z_b[mine], p_b[mine], info, ContrastiveLossConfig())
    global_view = gaitssb_loss(p_a[mine], p_b[mine], z_a, z_b, offset=rank * 3)[0]
    local_only = gaitssb_loss(p_a[mine], p_b[mine], z_a[mine], z_b[mine])[0]
    losses = [torch.zeros(()) for _ in range(world)]
    dist.all_gather(losses, loss)
    distributed.teardown()
    single_process = gaitssb_loss(p_a, p_b, z_a, z_b)[0]

    os.environ["MASTER_PORT"] = str(ports[1])
    result = train(tiny_config(), corpus_dir, out / "run", device="cpu", max_steps=3)
    params = {name: p.detach() for name, p in result.model.named_parameters()}
    torch.save(
        {"loss": loss, "global": global_view, "local": local_only, "mean": torch.stack(losses).mean(),
         "single": single_process, "params": params},
        out / f"rank{rank}.pt",
    )  # fmt: skip


@pytest.mark.slow
def test_two_cpu_processes_use_the_global_batch_and_stay_in_sync(corpus_dir: Path, tmp_path: Path) -> None:
    mp.start_processes(
        _ddp_rank, args=(2, (free_port(), free_port()), corpus_dir, tmp_path), nprocs=2, start_method="spawn"
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for r in ranks:
        torch.testing.assert_close(r["loss"], r["global"])  # negatives from the other rank were used
        assert not torch.allclose(r["loss"], r["local"])
    # The mean of the two ranks' losses is the one-process loss over the whole global batch.
    torch.testing.assert_close(ranks[0]["mean"], ranks[0]["single"])
    for name, p0 in ranks[0]["params"].items():
        torch.testing.assert_close(ranks[1]["params"][name], p0, rtol=0, atol=0, msg=name)
    assert [step for step, _ in checkpoint.list_checkpoints(tmp_path / "run")] == [3]  # rank 0 only saves
    assert len(read_metrics(tmp_path / "run")) == 3
    with pytest.raises(ConfigError, match="processes: 2 trained it, this run has 1"):
        train(tiny_config(), corpus_dir, tmp_path / "run", resume="yes", device="cpu", max_steps=4)

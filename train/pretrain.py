"""GaitSSB self-supervised pretraining: config, checks, and the loop.

One process on a CPU, one GPU, or many under `torchrun` (DDP detected from the environment):

    gaitlu train pretrain --config configs/gaitssb_tiny.yaml --data CORPUS --out runs/tiny
    torchrun --nproc_per_node=8 -m train.pretrain --config configs/gaitssb_pretrain.yaml --data ... --out ...

Each step: B sequences across all ranks, two clips each; per part, every query prediction is scored
against the stop-gradient projections of the GLOBAL batch (see train/losses.py). Checkpoints are atomic,
every `checkpoint_every` steps, at the end, and on SIGTERM (the current step finishes first).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from corpus.reader import Corpus, open_corpus
from gaitlu.errors import ConfigError, DataError
from gaitlu.preprocess import to_model_frames
from train import checkpoint, distributed
from train.config import OptimizerConfig, SchedulerConfig, build_config, config_to_dict, load_config
from train.data import DataPosition, PretrainStream, steps_per_epoch
from train.losses import LABEL_SMOOTHING, SCALE, gaitssb_loss
from train.model import GaitSSB, ModelConfig, count_parameters

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "bf16"]
AMP_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class DataConfig:
    global_batch: int = 512  # sequences per step over all ranks (paper: 8 GPUs x 64); 2 clips each
    num_workers: int = 8  # data-loader processes per rank (augmentation is CPU work)
    prefetch_factor: int = 2  # batches each worker keeps ready


@dataclass(frozen=True)
class LossConfig:
    scale: float = SCALE  # cosine logits x 16
    label_smoothing: float = LABEL_SMOOTHING


@dataclass(frozen=True)
class TrainerConfig:
    max_steps: int = 150_000
    precision: Precision = "fp16"  # autocast dtype on GPU; CPU always runs fp32
    channels_last: bool = False  # NHWC convs (a GPU tensor-core win); ignored on CPU
    compile: bool = False  # torch.compile the training step; ignored on CPU
    checkpoint_every: int = 10_000
    keep_last: int = 3  # checkpoints kept in RUN_DIR/checkpoints
    log_every: int = 100
    seed: int = 0  # model init and the data order / augmentation
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower; for tests and debugging)


@dataclass(frozen=True)
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


@dataclass(frozen=True)
class RunResult:
    """What a finished (or SIGTERM-stopped) run leaves: the bare model and where it stopped."""

    model: GaitSSB
    step: int
    stopped: bool  # True when a SIGTERM ended the run before max_steps
    checkpoint: Path | None


class TwoViewStep(nn.Module):
    """The training forward, one module so DDP sees one forward per step.

    The two clips go through the network separately, as in OpenGait (each view has its own BN batch).
    Returns the projections z and predictions p, (N, C, P) each, for views a and b.
    """

    def __init__(self, model: GaitSSB) -> None:
        super().__init__()
        self.model = model

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor) -> tuple[torch.Tensor, ...]:
        assert self.model.predictor is not None, "pretraining needs the pretrain form (with a predictor)"
        z_a = self.model.projector(self.model.encode(view_a))  # (N, C, P)
        z_b = self.model.projector(self.model.encode(view_b))
        return z_a, self.model.predictor(z_a), z_b, self.model.predictor(z_b)


def global_batch_loss(
    z_a: torch.Tensor,
    p_a: torch.Tensor,
    z_b: torch.Tensor,
    p_b: torch.Tensor,
    info: distributed.Dist,
    config: LossConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's GaitSSB loss against the targets of every rank (rank r's rows start at r * N)."""
    # One all_gather for both views: (world * 2, N, C, P) -> (world, 2, N, C, P).
    z_all = distributed.gather_detached(torch.stack([z_a, z_b])).unflatten(0, (info.world_size, 2))
    return gaitssb_loss(
        p_a,
        p_b,
        z_all[:, 0].flatten(0, 1),  # (world * N, C, P), rank-major like the offsets
        z_all[:, 1].flatten(0, 1),
        offset=info.rank * p_a.shape[0],
        scale=config.scale,
        label_smoothing=config.label_smoothing,
    )


class StopFlag:
    """Set by SIGTERM; the loop finishes its step, checkpoints and returns."""

    def __init__(self) -> None:
        self.set = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        logger.warning("SIGTERM: stopping after this step (a checkpoint follows)")
        self.set = True

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():  # Python only lets it handle signals
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def ignore_sigterm(worker_id: int) -> None:
    """Data workers leave SIGTERM to the main process (a scheduler signals the whole process group):
    a worker killed mid-step would abort the loop before its checkpoint. They exit with their parent."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def load_pretrain_config(path: str | Path) -> PretrainConfig:
    return load_config(path, PretrainConfig)


def with_max_steps(config: PretrainConfig, max_steps: int | None) -> PretrainConfig:
    if max_steps is None:
        return config
    return dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, max_steps=max_steps))


def check_config(config: PretrainConfig, world_size: int) -> None:
    """Values the types cannot express; ConfigError naming the key."""
    t, d = config.trainer, config.data
    if config.model.form != "pretrain":
        raise ConfigError("model.form must be 'pretrain' for pretraining (the predictor is trained here)")
    positive = {
        "trainer.max_steps": t.max_steps,
        "trainer.checkpoint_every": t.checkpoint_every,
        "trainer.log_every": t.log_every,
        "trainer.keep_last": t.keep_last,
        "data.global_batch": d.global_batch,
        "data.prefetch_factor": d.prefetch_factor,
        "optimizer.lr": config.optimizer.lr,
        "loss.scale": config.loss.scale,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    if d.num_workers < 0 or t.seed < 0:
        raise ConfigError("data.num_workers and trainer.seed must be >= 0")
    if not 0 <= config.loss.label_smoothing < 1:
        raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {config.loss.label_smoothing}")
    if d.global_batch % world_size:
        raise ConfigError(
            f"data.global_batch {d.global_batch} is not divisible by the {world_size} processes"
        )
    if d.global_batch // world_size < 2:
        raise ConfigError(
            "each process needs at least 2 sequences per step (BatchNorm); has"
            f" {d.global_batch // world_size}"
        )


def check_data(path: str | Path, config: PretrainConfig, world_size: int) -> Corpus:
    """Open the corpus and read one sequence, so a wrong path fails now, not in a worker later."""
    corpus = open_corpus(path)
    if len(corpus) == 0:
        raise DataError(f"{path}: holds no sequences")
    if steps_per_epoch(len(corpus), config.data.global_batch, world_size) == 0:
        raise DataError(
            f"{path}: {len(corpus)} sequences, fewer than one global batch ({config.data.global_batch})"
        )
    frames = to_model_frames(corpus.get(0))
    logger.debug("corpus %s: %d sequences, first has %d frames", path, len(corpus), len(frames))
    return corpus


def check_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """Make RUN_DIR (writable) and return the checkpoint to resume from; refuse to overwrite a run."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} exists and is not a directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as exc:
        raise ConfigError(f"--out {run_dir} is not writable ({exc.strerror})") from None
    latest = checkpoint.latest_checkpoint(run_dir)
    if resume and latest is None:
        raise ConfigError(f"--resume: no checkpoint in {run_dir / checkpoint.CHECKPOINT_DIR}")
    if not resume and latest is not None:
        raise ConfigError(f"{run_dir} already holds checkpoints: pass --resume, or choose another --out")
    return latest


def check_resumable(ckpt: dict[str, Any], config: PretrainConfig) -> None:
    """The model, batch and seed must match the checkpoint's, or the data order would silently change."""
    saved = build_config(PretrainConfig, ckpt["config"])
    for name, ours, theirs in (
        ("model", config.model, saved.model),
        ("data.global_batch", config.data.global_batch, saved.data.global_batch),
        ("trainer.seed", config.trainer.seed, saved.trainer.seed),
    ):
        if ours != theirs:
            raise ConfigError(f"--resume: {name} is {ours} here but {theirs} in the checkpoint")


def prepare(
    config: PretrainConfig, data: str | Path, run_dir: str | Path, resume: bool, world_size: int
) -> tuple[Corpus, Path | None]:
    """Every check that can fail, before any work: config, data, output folder, resume compatibility."""
    check_config(config, world_size)
    corpus = check_data(data, config, world_size)
    latest = check_run_dir(Path(run_dir), resume)
    if latest is not None:
        check_resumable(checkpoint.read_checkpoint(latest), config)
    return corpus, latest


def check_launch(
    config: PretrainConfig, data: str | Path, run_dir: str | Path, resume: bool, device: str, nproc: int
) -> None:
    """What `--nproc N` checks before starting N processes (each process checks again, cheaply)."""
    if distributed.resolve_device(device).type == "cuda" and nproc > torch.cuda.device_count():
        raise ConfigError(f"--nproc {nproc} but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    prepare(config, data, run_dir, resume, nproc)


def effective_trainer(trainer: TrainerConfig, device: torch.device) -> TrainerConfig:
    """CPU runs fp32 without compile or channels_last (autocast and compile do not pay there)."""
    if device.type == "cuda":
        return trainer
    changed = {
        k: v
        for k, v in (("precision", "fp32"), ("compile", False), ("channels_last", False))
        if getattr(trainer, k) != v
    }
    if changed:
        logger.info("on CPU: using %s", ", ".join(f"{k}={v}" for k, v in changed.items()))
    return dataclasses.replace(trainer, **changed)


def train(
    config: PretrainConfig,
    data: str | Path,
    run_dir: str | Path,
    resume: bool = False,
    device: str = "auto",
    max_steps: int | None = None,
) -> RunResult:
    """Pretrain (or continue pretraining) into RUN_DIR; returns when max_steps is reached or on SIGTERM."""
    config = with_max_steps(config, max_steps)
    world_size = distributed.env_world_size()
    corpus, latest = prepare(config, data, run_dir, resume, world_size)
    info = distributed.setup(device)
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        config = dataclasses.replace(config, trainer=effective_trainer(config.trainer, info.device))
        ckpt = checkpoint.read_checkpoint(latest, info.device) if latest is not None else None
        return _run(config, corpus, Path(run_dir), info, ckpt)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        distributed.teardown()


def _run(
    config: PretrainConfig,
    corpus: Corpus,
    run_dir: Path,
    info: distributed.Dist,
    ckpt: dict[str, Any] | None,
) -> RunResult:
    t = config.trainer
    device = info.device
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not t.deterministic
    torch.manual_seed(t.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)

    model = GaitSSB(config.model).to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.optimizer.lr,
        momentum=config.optimizer.momentum,
        weight_decay=config.optimizer.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(config.scheduler.milestones), gamma=config.scheduler.gamma
    )
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
    step, position = 0, DataPosition()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        checkpoint.restore_rng_state(ckpt["rng"])
        step = ckpt["step"]
        position = DataPosition(ckpt["data"]["epoch"], ckpt["data"]["sequences"])

    forward = distributed.prepare_model(TwoViewStep(model), info)
    if t.compile:
        forward = torch.compile(forward)

    per_rank = config.data.global_batch // info.world_size
    stream = PretrainStream(corpus, config.data.global_batch, t.seed, info.rank, info.world_size, position)
    workers = config.data.num_workers
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=config.data.prefetch_factor if workers else None,
        worker_init_fn=ignore_sigterm,
    )
    resolved = config_to_dict(config)
    log = RunLog(run_dir, resolved, step, enabled=info.is_master)
    if info.is_master:
        logger.info(
            "GaitSSB %s: %s parameters; %d process(es) on %s, %d sequences/step (%d per process), %s; "
            "%d steps per epoch of %d sequences; starting at step %d",
            "x".join(map(str, config.model.channels)),
            f"{count_parameters(model):,}",
            info.world_size,
            device,
            config.data.global_batch,
            per_rank,
            t.precision,
            stream.steps,
            len(corpus),
            step,
        )

    amp = dict(device_type=device.type, dtype=AMP_DTYPES[t.precision], enabled=t.precision != "fp32")
    saved: Path | None = None
    stopped = False
    batches = iter(loader)
    model.train()
    with StopFlag() as stop, log:
        while step < t.max_steps:
            batch = next(batches)
            view_a = batch.view_a.to(device, non_blocking=True)  # (b, 16, 64, 44)
            view_b = batch.view_b.to(device, non_blocking=True)
            with torch.autocast(**amp):
                z_a, p_a, z_b, p_b = forward(view_a, view_b)  # (b, C, P) each
            loss, accuracy = global_batch_loss(z_a, p_a, z_b, p_b, info, config.loss)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            position = DataPosition(batch.epoch, (batch.batch + 1) * config.data.global_batch)
            log.accumulate(loss, accuracy)
            if step % t.log_every == 0 or step == t.max_steps:
                log.write(step, batch.epoch, scheduler.get_last_lr()[0], config.data.global_batch)
            stopped = distributed.any_rank(stop.set, device)
            if step % t.checkpoint_every == 0 or step == t.max_steps or stopped:
                if info.is_master:
                    saved = checkpoint.save_in_run(
                        checkpoint.build_checkpoint(
                            model,
                            resolved,
                            step,
                            data={"epoch": position.epoch, "sequences": position.sequences},
                            optimizer=optimizer,
                            scheduler=scheduler,
                            scaler=scaler,
                            world_size=info.world_size,
                        ),
                        run_dir,
                        t.keep_last,
                    )
                    logger.info("step %d: checkpoint %s", step, saved)
                distributed.barrier()
            if stopped:
                break
    return RunResult(model=model, step=step, stopped=stopped and step < t.max_steps, checkpoint=saved)


class RunLog:
    """Rank 0's outputs: progress bar, TensorBoard (RUN_DIR/tb), RUN_DIR/metrics.jsonl, RUN_DIR/config.yaml.

    Other ranks still accumulate and join the cross-rank mean (a collective), but write nothing.
    """

    def __init__(
        self, run_dir: Path, config: dict[str, Any], start_step: int, enabled: bool, tag: str = "pretrain"
    ) -> None:
        self.enabled = enabled
        self.tag = tag  # TensorBoard scalars are named f"{tag}/loss", ...
        self.run_dir = run_dir
        self.start_step = start_step
        self.loss_sum = torch.zeros(())
        self.acc_sum = torch.zeros(())
        self.count = 0
        self.clock = time.perf_counter()
        if not enabled:
            return
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.metrics_path = run_dir / METRICS_FILE
        truncate_metrics(self.metrics_path, start_step)
        self.writer = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=start_step or None)
        self.bar = tqdm(
            total=config["trainer"]["max_steps"],
            initial=start_step,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.close()
            self.writer.close()

    def accumulate(self, loss: torch.Tensor, accuracy: torch.Tensor) -> None:
        if self.count == 0:
            self.loss_sum = torch.zeros((), device=loss.device)
            self.acc_sum = torch.zeros((), device=loss.device)
        self.loss_sum += loss.detach()
        self.acc_sum += accuracy.detach()
        self.count += 1
        if self.enabled:
            self.bar.update(1)

    def write(self, step: int, epoch: int, lr: float, global_batch: int) -> None:
        """Means over the steps since the last write, averaged over ranks (all ranks must call this)."""
        means = distributed.mean_across_ranks(torch.stack([self.loss_sum, self.acc_sum]) / self.count)
        now = time.perf_counter()
        record = {
            "step": step,
            "epoch": epoch,
            "loss": means[0].item(),
            "accuracy": means[1].item(),
            "lr": lr,
            "sequences_per_s": global_batch * self.count / (now - self.clock),
        }
        self.count, self.clock = 0, now
        if not self.enabled:
            return
        for key in ("loss", "accuracy", "lr", "sequences_per_s"):
            self.writer.add_scalar(f"{self.tag}/{key}", record[key], step)
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}", lr=f"{lr:.2g}")


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records after `last_step` (written after the checkpoint a resume starts from), atomically."""
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= last_step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{ln}\n" for ln in lines))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    """`python -m train.pretrain ...` (what torchrun runs): the `gaitlu train pretrain` command."""
    from gaitlu.cli import main as gaitlu_main

    gaitlu_main(["train", "pretrain", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()

"""GaitSSB self-supervised pretraining: its config, its checks, and its part of the shared loop.

One process on a CPU, one GPU, or many under `torchrun` (DDP detected from the environment):

    gaitlu train pretrain --config configs/gaitssb_tiny.yaml --data CORPUS --out runs/tiny
    torchrun --nproc_per_node=8 -m train.pretrain --config configs/gaitssb_pretrain.yaml --data ... --out ...

Each step: B sequences across all ranks, two clips each; per part, every query prediction is scored
against the stop-gradient projections of the GLOBAL batch (see train/losses.py). Resume, checkpoints,
SIGTERM, the fp16 grad scaler and the non-finite guard belong to the shared loop (train/run.py).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader

from corpus.reader import Corpus, open_corpus
from gaitlu.errors import ConfigError, DataError
from gaitlu.preprocess import to_model_frames
from train import checkpoint, distributed
from train.augment import AugmentConfig
from train.config import (
    ConfigModel,
    OptimizerConfig,
    SchedulerConfig,
    TrainerConfig,
    config_to_dict,
    load_config,
    replace,
)
from train.data import DataPosition, PretrainBatch, PretrainStream, steps_per_epoch
from train.losses import LABEL_SMOOTHING, SCALE, gaitssb_loss
from train.model import GaitSSB, ModelConfig, count_parameters
from train.run import (
    Resume,
    RunResult,
    RunSpec,
    TrainState,
    check_resumable,
    effective_trainer,
    ignore_sigterm,
    prepare_run_dir,
    to_channels_last,
    torch_settings,
    train_loop,
    with_max_steps,
)

logger = logging.getLogger(__name__)

# What a resume may change besides the trainer's pace (train/run.py MAY_CHANGE): loader settings.
RESUME_MAY_CHANGE = frozenset({"data.num_workers", "data.prefetch_factor"})


class PretrainDataConfig(ConfigModel):
    global_batch: int = 512  # sequences per step over all ranks (paper: 8 GPUs x 64); 2 clips each
    num_workers: int = 8  # data-loader processes per rank (augmentation is CPU work)
    prefetch_factor: int = 2  # batches each worker keeps ready


class ContrastiveLossConfig(ConfigModel):
    """GaitSSB's per-part contrastive loss (train/losses.py::gaitssb_loss)."""

    scale: float = SCALE  # cosine logits x 16
    label_smoothing: float = LABEL_SMOOTHING


class PretrainConfig(ConfigModel):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: PretrainDataConfig = Field(default_factory=PretrainDataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    loss: ContrastiveLossConfig = Field(default_factory=ContrastiveLossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)


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
    config: ContrastiveLossConfig,
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


def load_pretrain_config(path: str | Path) -> PretrainConfig:
    return load_config(path, PretrainConfig)


def check_config(config: PretrainConfig, world_size: int) -> None:
    """Values the types cannot express; ConfigError naming the key."""
    d = config.data
    if config.model.form != "pretrain":
        raise ConfigError("model.form must be 'pretrain' for pretraining (the predictor is trained here)")
    positive = {
        "data.global_batch": d.global_batch,
        "data.prefetch_factor": d.prefetch_factor,
        "optimizer.lr": config.optimizer.lr,
        "loss.scale": config.loss.scale,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    if d.num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {d.num_workers}")
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


def for_device(config: PretrainConfig, device: str) -> PretrainConfig:
    """The config as it runs on `device` (CPU: fp32, no compile): what checks, checkpoints and resumes see."""
    trainer = effective_trainer(config.trainer, distributed.resolve_device(device))
    return replace(config, trainer=trainer)


def prepare(
    config: PretrainConfig, data: str | Path, run_dir: Path, resume: Resume, world_size: int
) -> tuple[Corpus, dict[str, Any] | None]:
    """Every check that can fail, before any work: config, data, output folder, resume compatibility.

    `config` is resolved for the device (`for_device`). Returns the corpus and the checkpoint to
    resume from (read on the CPU), if any.
    """
    check_config(config, world_size)
    corpus = check_data(data, config, world_size)
    latest = prepare_run_dir(run_dir, resume)
    if latest is None:
        return corpus, None
    ckpt = checkpoint.read_checkpoint(latest)
    check_resumable(ckpt, latest, config, config.model, world_size, RESUME_MAY_CHANGE)
    return corpus, ckpt


def check_launch(
    config: PretrainConfig, data: str | Path, run_dir: str | Path, resume: Resume, device: str, nproc: int
) -> None:
    """What `--nproc N` checks before starting N processes (each process checks again, cheaply)."""
    if distributed.resolve_device(device).type == "cuda" and nproc > torch.cuda.device_count():
        raise ConfigError(f"--nproc {nproc} but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    prepare(for_device(config, device), data, Path(run_dir), resume, nproc)


def train(
    config: PretrainConfig,
    data: str | Path,
    run_dir: str | Path,
    resume: Resume = "no",
    device: str = "auto",
    max_steps: int | None = None,
) -> RunResult:
    """Pretrain (or continue pretraining) into RUN_DIR; returns when max_steps is reached or on SIGTERM."""
    config = for_device(with_max_steps(config, max_steps), device)
    corpus, ckpt = prepare(config, data, Path(run_dir), resume, distributed.env_world_size())
    info = distributed.setup(device)
    try:
        with torch_settings(config.trainer):
            return _run(config, corpus, Path(run_dir), info, ckpt)
    finally:
        distributed.teardown()


def _run(
    config: PretrainConfig,
    corpus: Corpus,
    run_dir: Path,
    info: distributed.Dist,
    ckpt: dict[str, Any] | None,
) -> RunResult:
    t, device, batch_size = config.trainer, info.device, config.data.global_batch
    torch.manual_seed(t.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = GaitSSB(config.model).to(device)
    if t.channels_last:
        model = to_channels_last(model)
    state = TrainState.create(
        model, model.parameters(), config.optimizer, config.scheduler, t.precision, device
    )
    step, position = 0, DataPosition()
    if ckpt is not None:
        step = state.restore(ckpt)
        position = DataPosition(**ckpt["data"])

    forward: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]
    forward = distributed.prepare_model(TwoViewStep(model), info)
    if t.compile:
        forward = torch.compile(forward)
    stream = PretrainStream(corpus, batch_size, t.seed, info.rank, info.world_size, position, config.augment)
    loader = _loader(stream, config, device)
    spec = RunSpec(t, config_to_dict(config), run_dir, info, tag="pretrain", samples_per_step=batch_size)
    if info.is_master:
        _log_start(config, model, info, stream.steps, len(corpus), step)

    def loss_of(batch: PretrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        view_a = batch.view_a.to(device, non_blocking=True)  # (b, frames, 64, 44)
        view_b = batch.view_b.to(device, non_blocking=True)
        with spec.autocast():
            z_a, p_a, z_b, p_b = forward(view_a, view_b)  # (b, C, P) each
        return global_batch_loss(z_a, p_a, z_b, p_b, info, config.loss)

    def position_after(batch: PretrainBatch) -> dict[str, int]:
        return {"epoch": batch.epoch, "sequences": (batch.batch + 1) * batch_size}

    model.train()
    return train_loop(spec, state, loader, loss_of, step, position_after)


def _loader(
    stream: PretrainStream, config: PretrainConfig, device: torch.device
) -> DataLoader[PretrainBatch]:
    """The stream's batches as they are (it batches itself), from `config.data.num_workers` workers."""
    workers = config.data.num_workers
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=config.data.prefetch_factor if workers else None,
        worker_init_fn=ignore_sigterm,
    )


def _log_start(
    config: PretrainConfig,
    model: nn.Module,
    info: distributed.Dist,
    steps: int,
    sequences: int,
    step: int,
) -> None:
    """One line on what this run trains, where, how fast it goes through the corpus, and from which step."""
    batch_size = config.data.global_batch
    logger.info(
        "GaitSSB %s: %s parameters; %d process(es) on %s, %d sequences/step (%d per process), %s; "
        "%d steps per epoch of %d sequences; starting at step %d",
        "x".join(map(str, config.model.channels)),
        f"{count_parameters(model):,}",
        info.world_size,
        info.device,
        batch_size,
        batch_size // info.world_size,
        config.trainer.precision,
        steps,
        sequences,
        step,
    )


def main(argv: list[str] | None = None) -> None:
    """`python -m train.pretrain ...` (what torchrun runs): the `gaitlu train pretrain` command."""
    from gaitlu.cli import main as gaitlu_main

    gaitlu_main(["train", "pretrain", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()

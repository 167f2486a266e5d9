"""Supervised fine-tuning of a pretrained GaitSSB on a labelled dataset (OpenGait's GaitSSB_Finetune).

Recipe (configs/gaitssb/finetune_*.yaml in OpenGait; docs/gaitssb.md): load encoder + projector, add
a weight-normalised per-part head, train with the batch-all triplet loss (margin 0.3) on P x K batches of
30-frame clips; the stem is frozen and every BatchNorm keeps its running statistics (eval mode) while
its affine weights train; each backbone stage has its own learning rate (0 freezes it), the projector
another, the head the optimizer's `lr`; SGD with momentum, MultiStepLR, and learning rates never below
`lr.floor` (OpenGait's `maintain_non_zero_learning_rate`).

The loss sees the head's output before the final L2 normalisation of `GaitSSB.forward` (as in OpenGait,
whose margin is tuned for that scale); evaluation uses the normalised forward.

One process, one device: BN statistics are frozen, so nothing needs synchronising, and a 12k-step
CASIA-B run fits one GPU. Data workers overlap the reading.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from gaitlu.errors import ConfigError, DataError
from gaitlu.labelled import load_partition, scan_labelled
from train import checkpoint
from train.config import OptimizerConfig, SchedulerConfig, build_config, config_to_dict
from train.distributed import env_world_size, resolve_device
from train.losses import TRIPLET_MARGIN, batch_all_triplet
from train.model import GaitSSB, ModelConfig
from train.pretrain import AMP_DTYPES, Precision, RunLog, check_run_dir
from train.sampler import LabelledClips, PKBatchSampler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneData:
    subjects_per_batch: int = 8  # P
    sequences_per_subject: int = 16  # K (drawn with replacement when a subject has fewer)
    frames: int = 30  # per training clip, drawn at random from the whole sequence
    workers: int = 2


@dataclass(frozen=True)
class LearningRates:
    """Per-module learning rates; the head uses `optimizer.lr` (OpenGait's base lr)."""

    backbone: tuple[float, ...] = (0.0, 1e-3, 1e-3, 1e-3)  # one per stage; 0 freezes the stage
    projector: float = 1e-2
    floor: float = 1e-4  # no group's lr decays below this (0 disables)

    def __post_init__(self) -> None:
        if len(self.backbone) != 4 or any(lr < 0 for lr in self.backbone):
            raise ConfigError(f"lr.backbone needs 4 non-negative values (one per stage), got {self.backbone}")
        frozen = [i for i, lr in enumerate(self.backbone) if lr == 0]
        if frozen and any(lr > 0 for lr in self.backbone[: frozen[-1]]):
            raise ConfigError(
                f"lr.backbone {list(self.backbone)}: a stage before a frozen stage cannot train "
                "(no gradient reaches it through a frozen stage); freeze it too"
            )


@dataclass(frozen=True)
class LossConfig:
    margin: float = TRIPLET_MARGIN


@dataclass(frozen=True)
class FinetuneTrainer:
    max_steps: int = 12_000
    precision: Precision = "fp16"  # autocast dtype on GPU; CPU always runs fp32
    checkpoint_every: int = 2_000
    keep_last: int = 3  # checkpoints kept in RUN_DIR/checkpoints
    log_every: int = 100
    seed: int = 0  # head init and the batch / frame draws


@dataclass(frozen=True)
class FinetuneConfig:
    data: FinetuneData = field(default_factory=FinetuneData)
    loss: LossConfig = field(default_factory=LossConfig)
    lr: LearningRates = field(default_factory=LearningRates)
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=0.1))
    scheduler: SchedulerConfig = field(
        default_factory=lambda: SchedulerConfig(milestones=(6000, 8000, 10000))
    )
    trainer: FinetuneTrainer = field(default_factory=FinetuneTrainer)

    def __post_init__(self) -> None:
        d, t = self.data, self.trainer
        positive = {
            "data.frames": d.frames,
            "loss.margin": self.loss.margin,
            "optimizer.lr": self.optimizer.lr,
            "trainer.max_steps": t.max_steps,
            "trainer.checkpoint_every": t.checkpoint_every,
            "trainer.keep_last": t.keep_last,
            "trainer.log_every": t.log_every,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key} must be positive, got {value}")
        if d.subjects_per_batch < 2 or d.sequences_per_subject < 2:
            raise ConfigError("data.subjects_per_batch and data.sequences_per_subject must be at least 2")
        if d.workers < 0 or t.seed < 0:
            raise ConfigError("data.workers and trainer.seed must be >= 0")


# ---------------------------------------------------------------------------------------------------
# Model surgery


def finetune_model(init: dict[str, Any]) -> GaitSSB:
    """A finetune-form GaitSSB with the encoder + projector of checkpoint dict `init`.

    The head is copied too when `init` already is a finetune checkpoint; otherwise it starts fresh.
    The predictor of a pretrain checkpoint is dropped.
    """
    source = build_config(ModelConfig, init["model_config"])
    model = GaitSSB(dataclasses.replace(source, form="finetune"))
    state = {k: v for k, v in init["model"].items() if not k.startswith("predictor.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("head.") for k in missing):
        raise DataError(
            f"the init checkpoint does not fit GaitSSB: missing {missing}, unexpected {unexpected}"
        )
    return model


def is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def train_mode(model: GaitSSB) -> None:
    """Training mode with every BatchNorm in eval mode: statistics stay as pretrained (OpenGait fix_BN)."""
    model.train()
    for module in model.modules():
        if is_batchnorm(module):
            module.eval()


def param_groups(model: GaitSSB, lrs: LearningRates, head_lr: float) -> list[dict[str, Any]]:
    """Optimizer groups; the stem and stages with lr 0 get requires_grad False and no group."""
    stem = [model.backbone.conv1, model.backbone.bn1]
    frozen = stem + [s for s, lr in zip(model.backbone.layers, lrs.backbone, strict=True) if lr == 0]
    for module in frozen:
        module.requires_grad_(False)
    groups = [
        {"name": f"stage{i + 1}", "params": list(stage.parameters()), "lr": lr}
        for i, (stage, lr) in enumerate(zip(model.backbone.layers, lrs.backbone, strict=True))
        if lr > 0
    ]
    assert model.head is not None
    groups.append({"name": "projector", "params": list(model.projector.parameters()), "lr": lrs.projector})
    groups.append({"name": "head", "params": list(model.head.parameters()), "lr": head_lr})
    return groups


def head_embeddings(model: GaitSSB, sils: torch.Tensor) -> torch.Tensor:
    """(N, T, 64, 44) clips -> (N, C, P) head outputs, before the final L2 normalisation (the loss input)."""
    assert model.head is not None, "fine-tuning needs a finetune-form model"
    z = model.projector(model.encode(sils))  # (N, C, P)
    return model.head(F.normalize(z, dim=1))  # (N, C, P)


def apply_lr_floor(optimizer: torch.optim.Optimizer, floor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = max(group["lr"], floor)


# ---------------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class FinetuneInputs:
    """Everything a run reads, checked before any work starts."""

    config: FinetuneConfig
    model: GaitSSB  # finetune form, with the init checkpoint's weights
    init_path: Path
    dataset: Path
    clips: LabelledClips
    resume_from: Path | None


def with_max_steps(config: FinetuneConfig, max_steps: int | None) -> FinetuneConfig:
    if max_steps is None:
        return config
    return dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, max_steps=max_steps))


def prepare(
    config: FinetuneConfig, init: Path, dataset: Path, partition: Path, run_dir: Path, resume: bool = False
) -> FinetuneInputs:
    """Check init checkpoint, dataset, partition and run folder; every problem is a GaitluError."""
    if env_world_size() > 1:
        raise ConfigError(
            "fine-tuning runs in one process (BN statistics are frozen): start it without torchrun"
        )
    torch.manual_seed(config.trainer.seed)  # the new head's initial weights
    model = finetune_model(checkpoint.read_checkpoint(init))
    split = load_partition(partition)
    sequences = scan_labelled(dataset, set(split.train))
    if not sequences:
        raise DataError(f"no sequences of the {len(split.train)} TRAIN_SET subjects found under {dataset}")
    clips = LabelledClips(sequences, config.data.frames)
    if len(clips.subject_ids) < config.data.subjects_per_batch:
        raise DataError(
            f"{dataset}: {len(clips.subject_ids)} training subjects, fewer than "
            f"data.subjects_per_batch = {config.data.subjects_per_batch}"
        )
    resume_from = check_run_dir(run_dir, resume)
    return FinetuneInputs(config, model, init, dataset, clips, resume_from)


def finetune(
    config: FinetuneConfig,
    init: Path,
    dataset: Path,
    partition: Path,
    run_dir: Path,
    resume: bool = False,
    device: str = "auto",
) -> Path:
    """Fine-tune into RUN_DIR/checkpoints/step-*.pt (see the module docstring); returns the last one."""
    chosen = resolve_device(device)
    return _run(prepare(config, init, dataset, partition, run_dir, resume), run_dir, chosen)


def _run(inputs: FinetuneInputs, run_dir: Path, device: torch.device) -> Path:
    cfg, t = inputs.config, inputs.config.trainer
    precision = t.precision if device.type == "cuda" else "fp32"
    model = inputs.model.to(device)
    optimizer = torch.optim.SGD(
        param_groups(model, cfg.lr, cfg.optimizer.lr),
        lr=cfg.optimizer.lr,
        momentum=cfg.optimizer.momentum,
        weight_decay=cfg.optimizer.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(cfg.scheduler.milestones), gamma=cfg.scheduler.gamma
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    step = 0
    if inputs.resume_from is not None:
        state = checkpoint.read_checkpoint(inputs.resume_from, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step = state["step"]
        logger.info("resuming %s at step %d", inputs.resume_from, step)

    data = cfg.data
    batch = data.subjects_per_batch * data.sequences_per_subject
    sampler = PKBatchSampler(
        inputs.clips.subjects, data.subjects_per_batch, data.sequences_per_subject, t.seed, start_step=step
    )
    loader = DataLoader(
        inputs.clips,
        batch_sampler=sampler,
        num_workers=data.workers,
        pin_memory=device.type == "cuda",
    )
    resolved = {**config_to_dict(cfg), "init": str(inputs.init_path), "dataset": str(inputs.dataset)}
    logger.info(
        "fine-tuning %s on %d sequences of %d subjects, %d x %d clips of %d frames per step, on %s, %s",
        inputs.init_path,
        len(inputs.clips),
        len(inputs.clips.subject_ids),
        data.subjects_per_batch,
        data.sequences_per_subject,
        data.frames,
        device,
        precision,
    )
    amp = dict(device_type=device.type, dtype=AMP_DTYPES[precision], enabled=precision != "fp32")
    saved = inputs.resume_from
    batches = iter(loader)
    train_mode(model)
    with RunLog(run_dir, resolved, step, enabled=True, tag="finetune") as log:
        while step < t.max_steps:
            clips, labels = next(batches)  # (P*K, frames, 64, 44), (P*K,)
            clips, labels = clips.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(**amp):
                emb = head_embeddings(model, clips)  # (P*K, C, P)
            loss, accuracy = batch_all_triplet(emb, labels, cfg.loss.margin)
            if not math.isfinite(loss.item()):
                raise DataError(f"the loss became {loss.item()} at step {step + 1}: lower the learning rates")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            apply_lr_floor(optimizer, cfg.lr.floor)
            step += 1
            log.accumulate(loss, accuracy)
            if step % t.log_every == 0 or step == t.max_steps:
                log.write(step, 0, optimizer.param_groups[-1]["lr"], batch)
            if step % t.checkpoint_every == 0 or step == t.max_steps:
                ckpt = checkpoint.build_checkpoint(
                    model, resolved, step, optimizer=optimizer, scheduler=scheduler, scaler=scaler
                )
                saved = checkpoint.save_in_run(ckpt, run_dir, t.keep_last)
                logger.info("step %d: checkpoint %s", step, saved)
    assert saved is not None
    return saved

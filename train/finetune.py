"""Supervised fine-tuning of a pretrained GaitSSB on a labelled dataset (OpenGait's GaitSSB_Finetune).

Recipe (configs/gaitssb/finetune_*.yaml in OpenGait; docs/training.md): load encoder + projector, add
a weight-normalised per-part head, train with the batch-all triplet loss (margin 0.3) on P x K batches of
30-frame clips; the stem is frozen and every BatchNorm keeps its running statistics (eval mode) while
its affine weights train; each backbone stage has its own learning rate (0 freezes it), the projector
another, the head the optimizer's `lr`; SGD with momentum, MultiStepLR, and learning rates never below
`lr.floor` (OpenGait's `maintain_non_zero_learning_rate`).

The loss sees the head's output on the L2-normalised projection (as in OpenGait, whose margin is tuned
for that scale), and so does evaluation: the fine-tuned `GaitSSB.forward` returns that raw head output
(OpenGait's head0), and per-part normalisation for the service's index is a step the export manifest
records (`indexing`), not part of the model.

One process, one device: BN statistics are frozen, so nothing needs synchronising, and a 12k-step
CASIA-B run fits one GPU. Data workers overlap the reading. Resume, checkpoints, SIGTERM, the fp16
grad scaler and the non-finite guard belong to the shared loop (train/run.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader

from gaitlu.errors import ConfigError, DataError
from train import checkpoint, distributed
from train.config import (
    ConfigModel,
    Floats,
    OptimizerConfig,
    SchedulerConfig,
    TrainerConfig,
    build_config,
    config_to_dict,
    replace,
)
from train.losses import TRIPLET_MARGIN, batch_all_triplet, labels_per_class
from train.model import GaitSSB, ModelConfig
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
)
from train.sampler import LabelledClips, PKBatchSampler, training_clips

logger = logging.getLogger(__name__)

# What a resume may change besides the trainer's pace (train/run.py MAY_CHANGE): loader workers.
RESUME_MAY_CHANGE = frozenset({"data.num_workers"})


class FinetuneDataConfig(ConfigModel):
    subjects_per_batch: int = 8  # P
    sequences_per_subject: int = 16  # K (drawn with replacement when a subject has fewer)
    frames: int = 30  # per training clip, drawn at random from the whole sequence
    num_workers: int = 2  # data-loader processes


class LearningRates(ConfigModel):
    """Per-module learning rates; the head uses `optimizer.lr` (OpenGait's base lr)."""

    backbone: Floats = (0.0, 1e-3, 1e-3, 1e-3)  # one per stage; 0 freezes the stage
    projector: float = 1e-2
    floor: float = 1e-4  # no group's lr decays below this (0 disables)

    def model_post_init(self, context: Any, /) -> None:
        if len(self.backbone) != 4 or any(lr < 0 for lr in self.backbone):
            raise ConfigError(f"lr.backbone needs 4 non-negative values (one per stage), got {self.backbone}")
        frozen = [i for i, lr in enumerate(self.backbone) if lr == 0]
        if frozen and any(lr > 0 for lr in self.backbone[: frozen[-1]]):
            raise ConfigError(
                f"lr.backbone {list(self.backbone)}: a stage before a frozen stage cannot train "
                "(no gradient reaches it through a frozen stage); freeze it too"
            )


class TripletLossConfig(ConfigModel):
    """The batch-all triplet loss (train/losses.py::batch_all_triplet)."""

    margin: float = TRIPLET_MARGIN


class FinetuneConfig(ConfigModel):
    data: FinetuneDataConfig = Field(default_factory=FinetuneDataConfig)
    loss: TripletLossConfig = Field(default_factory=TripletLossConfig)
    lr: LearningRates = Field(default_factory=LearningRates)
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(lr=0.1))
    scheduler: SchedulerConfig = Field(
        default_factory=lambda: SchedulerConfig(milestones=(6000, 8000, 10000))
    )
    trainer: TrainerConfig = Field(
        default_factory=lambda: TrainerConfig(max_steps=12_000, checkpoint_every=2_000)
    )

    def model_post_init(self, context: Any, /) -> None:
        d = self.data
        positive = {
            "data.frames": d.frames,
            "loss.margin": self.loss.margin,
            "optimizer.lr": self.optimizer.lr,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key} must be positive, got {value}")
        if d.subjects_per_batch < 2 or d.sequences_per_subject < 2:
            raise ConfigError("data.subjects_per_batch and data.sequences_per_subject must be at least 2")
        if d.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {d.num_workers}")


# ---------------------------------------------------------------------------------------------------
# Model surgery


def finetune_model(init: dict[str, Any]) -> GaitSSB:
    """A finetune-form GaitSSB with the encoder + projector of checkpoint dict `init`.

    The head is copied too when `init` already is a finetune checkpoint; otherwise it starts fresh.
    The predictor of a pretrain checkpoint is dropped. Any other architecture is refused: this is
    GaitSSB's recipe (OpenGait's zoo models are imported for evaluation and serving, not fine-tuned here).
    """
    arch = checkpoint.architecture_name(init)
    if arch != "gaitssb":
        raise DataError(
            f"the init checkpoint holds a {arch} model; fine-tuning starts from a GaitSSB checkpoint: one "
            "written by `gaitlu train pretrain` or `gaitlu train finetune`, or an OpenGait GaitSSB "
            f"imported with `gaitlu train import-opengait` ({arch} can be evaluated and exported as it is)"
        )
    source = build_config(ModelConfig, init["model_config"])
    model = GaitSSB(replace(source, form="finetune"))
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
    """(N, T, 64, 44) clips -> (N, C, P) raw head outputs (the finetune-form forward): the loss input."""
    assert model.head is not None, "fine-tuning needs a finetune-form model"
    return model(sils).transpose(1, 2)  # (N, P, C) -> (N, C, P)


def apply_lr_floor(optimizer: torch.optim.Optimizer, floor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = max(group["lr"], floor)


# ---------------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class FinetuneInputs:
    """Everything a run reads, checked before any work starts."""

    config: FinetuneConfig  # resolved for the device
    model: GaitSSB  # finetune form, with the init checkpoint's weights
    init_path: Path
    dataset: Path
    clips: LabelledClips
    resume_from: dict[str, Any] | None  # the checkpoint to continue (read on the CPU)


def prepare(
    config: FinetuneConfig,
    init: Path,
    dataset: Path,
    partition: Path,
    run_dir: Path,
    resume: Resume = "no",
) -> FinetuneInputs:
    """Check init checkpoint, dataset, partition, run folder and resume; every problem is a GaitluError.

    `config` is resolved for the device (see `finetune`).
    """
    if distributed.env_world_size() > 1:
        raise ConfigError(
            "fine-tuning runs in one process (BN statistics are frozen): start it without torchrun"
        )
    torch.manual_seed(config.trainer.seed)  # the new head's initial weights
    model = finetune_model(checkpoint.read_checkpoint(init))
    clips = training_clips(dataset, partition, config.data.frames, config.data.subjects_per_batch)
    latest = prepare_run_dir(run_dir, resume)
    ckpt = None
    if latest is not None:
        ckpt = checkpoint.read_checkpoint(latest)
        check_resumable(ckpt, latest, config, model.config, world_size=1, may_change=RESUME_MAY_CHANGE)
    return FinetuneInputs(config, model, init, dataset, clips, ckpt)


def finetune(
    config: FinetuneConfig,
    init: Path,
    dataset: Path,
    partition: Path,
    run_dir: Path,
    resume: Resume = "no",
    device: str = "auto",
) -> RunResult:
    """Fine-tune into RUN_DIR/checkpoints/step-*.pt (see the module docstring); returns at
    trainer.max_steps or on SIGTERM, with the newest checkpoint."""
    trainer = effective_trainer(config.trainer, distributed.resolve_device(device))
    inputs = prepare(replace(config, trainer=trainer), init, dataset, partition, run_dir, resume)
    info = distributed.setup(device)  # one process: resolves the device, joins no group
    with torch_settings(trainer):
        return _run(inputs, run_dir, info)


def _run(inputs: FinetuneInputs, run_dir: Path, info: distributed.Dist) -> RunResult:
    cfg, t, device = inputs.config, inputs.config.trainer, info.device
    model = inputs.model.to(device)
    if t.channels_last:
        model = to_channels_last(model)
    groups = param_groups(model, cfg.lr, cfg.optimizer.lr)
    state = TrainState.create(model, groups, cfg.optimizer, cfg.scheduler, t.precision, device)
    step = state.restore(inputs.resume_from) if inputs.resume_from is not None else 0
    embed = torch.compile(head_embeddings) if t.compile else head_embeddings

    data = cfg.data
    batch = data.subjects_per_batch * data.sequences_per_subject
    sampler = PKBatchSampler(
        inputs.clips.subjects, data.subjects_per_batch, data.sequences_per_subject, t.seed, start_step=step
    )
    loader = DataLoader(
        inputs.clips,
        batch_sampler=sampler,
        num_workers=data.num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=ignore_sigterm,
    )
    resolved = {**config_to_dict(cfg), "init": str(inputs.init_path), "dataset": str(inputs.dataset)}
    spec = RunSpec(t, resolved, run_dir, info, tag="finetune", samples_per_step=batch)
    logger.info(
        "fine-tuning %s on %d sequences of %d subjects, %d x %d clips of %d frames per step, on %s, %s; "
        "starting at step %d",
        inputs.init_path,
        len(inputs.clips),
        len(inputs.clips.subject_ids),
        data.subjects_per_batch,
        data.sequences_per_subject,
        data.frames,
        device,
        t.precision,
        step,
    )

    def loss_of(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        clips, labels = batch  # (P*K, frames, 64, 44), (P*K,), on the host
        per_label = labels_per_class(labels)  # checked here, so the loss need not read the device
        clips, labels = clips.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with spec.autocast():
            emb = embed(model, clips)  # (P*K, C, P)
        return batch_all_triplet(emb, labels, cfg.loss.margin, per_label)

    train_mode(model)
    return train_loop(
        spec, state, loader, loss_of, step, after_update=lambda: apply_lr_floor(state.optimizer, cfg.lr.floor)
    )

"""Supervised training of any registered architecture on a labelled dataset (`gaitlu train supervised`).

OpenGait trains its zoo the same way, and so do we: P x K batches of clips, the batch-all triplet loss
per part on the network's embedding, plus (GaitBase, DeepGaitV2, GaitGL) a cross-entropy with label
smoothing on the logits of a BNNeck: a part-wise BatchNorm, then cosine against one normalised weight
vector per training subject and part, times a scale (OpenGait's SeparateBNNecks with `norm`). The BNNeck
is a training-only head: it is checkpointed (so a run resumes exactly) but is not part of the network,
so the result exports and serves as an imported zoo model does. Configs (configs/supervised_*.yaml)
start from OpenGait's recipe for each model.

The network comes from the config's `model` section (from scratch) or from a checkpoint (`--init`, the
same architecture: pretrained, imported or trained before). Clips are drawn with the capture shifts of
train/shifts.py (`augment`). One process; the loop (resume, SIGTERM, checkpoints, bf16 on CPU) is
train/run.py's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader

from gaitlu.errors import ConfigError, DataError
from train import checkpoint, distributed
from train.config import (
    ConfigModel,
    OptimizerConfig,
    SchedulerConfig,
    TrainerConfig,
    build_config,
    config_to_dict,
    replace,
)
from train.losses import LABEL_SMOOTHING, SCALE, batch_all_triplet, labels_per_class, part_cross_entropy
from train.model import PartBatchNorm
from train.network import GaitNetwork, NetworkConfig
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
from train.shifts import ShiftConfig
from train.zoo.registry import architecture, build_network

logger = logging.getLogger(__name__)

RESUME_MAY_CHANGE = frozenset({"data.num_workers"})


class NetworkSection(ConfigModel):
    """The network to train from scratch: a registered architecture and its config keys."""

    architecture: str = "gaitbase"
    config: dict[str, Any] = Field(default_factory=dict)  # the architecture's config (defaults: paper)

    def model_post_init(self, context: Any, /) -> None:
        arch = architecture(self.architecture)  # ConfigError naming the known ones
        build_config(arch.config, self.config, "model.config")  # its keys, as strictly as any section


class SupervisedData(ConfigModel):
    subjects_per_batch: int = 8  # P
    sequences_per_subject: int = 16  # K (drawn with replacement when a subject has fewer)
    frames: int = 30  # per training clip
    num_workers: int = 2  # data-loader processes


class SupervisedLoss(ConfigModel):
    margin: float = 0.2  # batch-all triplet margin, on the embedding
    ce_weight: float = 1.0  # BNNeck cross-entropy weight; 0 trains with the triplet loss alone
    scale: float = SCALE  # cosine logits are multiplied by this
    label_smoothing: float = LABEL_SMOOTHING
    cosine: bool = True  # BNNeck logits: cosine to unit class weights (False: raw, as GaitGL's head)


class SupervisedConfig(ConfigModel):
    model: NetworkSection = Field(default_factory=NetworkSection)
    data: SupervisedData = Field(default_factory=SupervisedData)
    augment: ShiftConfig = Field(default_factory=ShiftConfig)
    loss: SupervisedLoss = Field(default_factory=SupervisedLoss)
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(lr=0.1))
    scheduler: SchedulerConfig = Field(
        default_factory=lambda: SchedulerConfig(milestones=(20_000, 40_000, 50_000))
    )
    trainer: TrainerConfig = Field(
        default_factory=lambda: TrainerConfig(max_steps=60_000, checkpoint_every=10_000)
    )

    def model_post_init(self, context: Any, /) -> None:
        d, loss = self.data, self.loss
        if d.frames < 1 or self.optimizer.lr <= 0 or loss.margin <= 0 or loss.scale <= 0:
            raise ConfigError("data.frames, optimizer.lr, loss.margin and loss.scale must be positive")
        if d.subjects_per_batch < 2 or d.sequences_per_subject < 2:
            raise ConfigError("data.subjects_per_batch and data.sequences_per_subject must be at least 2")
        if d.num_workers < 0 or loss.ce_weight < 0 or not 0 <= loss.label_smoothing < 1:
            raise ConfigError("data.num_workers and loss.ce_weight must be >= 0, label_smoothing in [0, 1)")


class BNNeck(nn.Module):
    """Training-only classifier on (N, C, P) embeddings: part BatchNorm, then per-part logits against
    one weight vector per class -> (N, classes, P); cosine logits (unit features and weights) unless
    `cosine` is off."""

    def __init__(self, parts: int, channels: int, classes: int, cosine: bool = True) -> None:
        super().__init__()
        self.bn = PartBatchNorm(parts, channels)
        self.weight = nn.Parameter(torch.empty(parts, channels, classes))
        nn.init.xavier_uniform_(self.weight)
        self.cosine = cosine

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        x: torch.Tensor = self.bn(emb).permute(2, 0, 1)  # (P, N, C)
        weight: torch.Tensor = self.weight
        if self.cosine:
            x, weight = F.normalize(x, dim=-1), F.normalize(weight, dim=1)
        logits = x.matmul(weight)  # (P, N, classes)
        return logits.permute(1, 2, 0)  # (N, classes, P)


def initial_network(config: SupervisedConfig, init: Path | None) -> GaitNetwork[NetworkConfig]:
    """The network to train: fresh from `config.model`, or `init`'s weights (same architecture; a
    GaitSSB pretraining checkpoint becomes the fine-tune form, its predictor dropped)."""
    if init is None:
        return build_network(config.model.architecture, config.model.config)
    ckpt = checkpoint.read_checkpoint(init)
    name = checkpoint.architecture_name(ckpt)
    if name != config.model.architecture:
        raise ConfigError(
            f"--init {init} holds a {name} model, the config's model.architecture is "
            f"{config.model.architecture}: train a {name} config, or start from scratch"
        )
    if name == "gaitssb":
        from train.finetune import finetune_model  # the pretrain -> fine-tune form surgery

        return finetune_model(ckpt)
    network = build_network(name, ckpt["model_config"])
    try:
        network.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise DataError(f"--init {init}: weights do not match its model_config: {exc}") from exc
    return network


@dataclass(frozen=True)
class SupervisedInputs:
    """Everything a run reads, checked before any work starts."""

    config: SupervisedConfig  # resolved for the device
    model: GaitNetwork[NetworkConfig]
    head: BNNeck | None
    dataset: Path
    clips: LabelledClips
    resume_from: dict[str, Any] | None


def prepare(
    config: SupervisedConfig,
    init: Path | None,
    dataset: Path,
    partition: Path,
    run_dir: Path,
    resume: Resume = "no",
) -> SupervisedInputs:
    """Check init, dataset, partition, run folder and resume; every problem is a GaitluError."""
    if distributed.env_world_size() > 1:
        raise ConfigError("supervised training runs in one process: start it without torchrun")
    torch.manual_seed(config.trainer.seed)  # initial weights
    model = initial_network(config, init)
    clips = training_clips(
        dataset, partition, config.data.frames, config.data.subjects_per_batch, config.augment
    )
    layout = model.config.layout
    classes = len(clips.subject_ids)
    loss = config.loss
    head = BNNeck(layout.parts, layout.part_dim, classes, loss.cosine) if loss.ce_weight > 0 else None
    latest = prepare_run_dir(run_dir, resume)
    ckpt = None
    if latest is not None:
        ckpt = checkpoint.read_checkpoint(latest)
        check_resumable(ckpt, latest, config, model.config, world_size=1, may_change=RESUME_MAY_CHANGE)
    return SupervisedInputs(config, model, head, dataset, clips, ckpt)


def train(
    config: SupervisedConfig,
    dataset: Path,
    partition: Path,
    run_dir: Path,
    init: Path | None = None,
    resume: Resume = "no",
    device: str = "auto",
) -> RunResult:
    """Train into RUN_DIR/checkpoints/step-*.pt; returns at trainer.max_steps or on SIGTERM."""
    trainer = effective_trainer(config.trainer, distributed.resolve_device(device))
    config = replace(config, trainer=trainer)
    inputs = prepare(config, init, dataset, partition, run_dir, resume)
    info = distributed.setup(device)
    with torch_settings(trainer):
        return _run(inputs, run_dir, info, init)


def _run(inputs: SupervisedInputs, run_dir: Path, info: distributed.Dist, init: Path | None) -> RunResult:
    cfg, t, device = inputs.config, inputs.config.trainer, info.device
    model, head = inputs.model.to(device), inputs.head
    if t.channels_last:
        model = to_channels_last(model)
    params = list(model.parameters())
    if head is not None:
        head = head.to(device)
        params += list(head.parameters())
    state = TrainState.create(model, params, cfg.optimizer, cfg.scheduler, t.precision, device, head)
    step = state.restore(inputs.resume_from) if inputs.resume_from is not None else 0

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
        persistent_workers=data.num_workers > 0,
    )
    resolved = {
        **config_to_dict(cfg),
        "init": str(init) if init is not None else None,
        "dataset": str(inputs.dataset),
        "subjects": inputs.clips.subject_ids,
    }
    spec = RunSpec(t, resolved, run_dir, info, tag="supervised", samples_per_step=batch)
    logger.info(
        "training %s on %d sequences of %d subjects, %d x %d clips of %d frames per step, on %s, %s%s; "
        "starting at step %d",
        cfg.model.architecture,
        len(inputs.clips),
        len(inputs.clips.subject_ids),
        data.subjects_per_batch,
        data.sequences_per_subject,
        data.frames,
        device,
        t.precision,
        ", channels_last" if t.channels_last else "",
        step,
    )

    def loss_of(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        clips, labels = batch  # (P*K, frames, 64, 44), (P*K,), on the host
        per_label = labels_per_class(labels)
        clips, labels = clips.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with spec.autocast():
            emb = model(clips).transpose(1, 2)  # (N, C, P)
            logits = head(emb) if head is not None else None  # (N, classes, P)
        loss, accuracy = batch_all_triplet(emb, labels, cfg.loss.margin, per_label)
        if logits is not None:
            ce, _ = part_cross_entropy(logits, labels, cfg.loss.scale, cfg.loss.label_smoothing)
            loss = loss + cfg.loss.ce_weight * ce
        return loss, accuracy

    model.train()
    if head is not None:
        head.train()
    return train_loop(spec, state, loader, loss_of, step)

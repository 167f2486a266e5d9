"""A tiny GaitSSB and its checkpoint, for the export and runtime tests (and the session artifact)."""

from __future__ import annotations

from pathlib import Path

import torch

from train.checkpoint import atomic_save, build_checkpoint
from train.config import config_to_dict
from train.model import GaitSSB, ModelConfig

TINY = ModelConfig(channels=(8, 16, 32, 64))
SMALL_PARITY = ((2, 3), (1, 5))  # (batch, frames): enough to exercise the check, cheap on 2 cores


def tiny_model(seed: int = 0) -> GaitSSB:
    """Random weights with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = GaitSSB(TINY)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def write_checkpoint(path: Path, model: GaitSSB, step: int = 7) -> Path:
    """A gaitlu checkpoint of `model`, written by the training stage's own writer."""
    config = {"model": config_to_dict(model.config), "trainer": {"seed": 0}}
    atomic_save(build_checkpoint(model, config, step), path)
    return path

"""Training checkpoints: one documented dict, written atomically, loaded without arbitrary unpickling.

Format "gaitlu-checkpoint/1" (a `torch.save` dict):

    format         "gaitlu-checkpoint/1"
    architecture   the registered architecture (train/zoo/registry.py); absent in older files: "gaitssb"
    model_config   its config as a plain dict (GaitSSB: ModelConfig)
    config         the resolved experiment config (plain dict), CLI overrides applied
    model          state_dict of the bare GaitSSB: never DDP's `module.` or torch.compile's `_orig_mod.`
    optimizer, scheduler, scaler   their state_dicts (None when not saved, e.g. exported weights)
    step           training steps done (a step the fp16 GradScaler skipped counts; see train/run.py)
    data           where the data stream stands, for the stage to resume it (pretraining:
                   {"epoch": e, "sequences": n consumed in epoch e}; None when the step says it all)
    rng            {"torch": ByteTensor, "cuda": [ByteTensor of the saving process's GPU] or []}
    world_size     processes that trained it (a resume must use as many)
    created        ISO-8601 UTC time of the save
    torch_version  torch.__version__ of the writer

Files are written with `gaitlu.files.atomic_write` (a temp name in the same folder, fsynced, renamed over
the target): a reader sees the old checkpoint or the new one, never half of one (a SIGTERM or a full disk
mid-save loses nothing).
Loading uses `weights_only=True`, so a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gaitlu.errors import DataError
from gaitlu.files import atomic_write
from train.config import config_to_dict
from train.network import GaitNetwork, NetworkConfig
from train.zoo.registry import architecture_of, build_network

logger = logging.getLogger(__name__)

FORMAT = "gaitlu-checkpoint/1"
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{8})\.pt$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def bare_model(model: nn.Module) -> nn.Module:
    """The module under DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(inner, nn.Module):
            model = inner
        else:
            return model


def rng_state() -> dict[str, Any]:
    """The CPU generator and the current GPU's (not every visible GPU's: the resuming node may have fewer)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore into the CPU generator and the current GPU; element 0 is the saving rank's GPU (also in
    checkpoints written before only one GPU's state was kept, which listed every GPU in order)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0])


def architecture_name(ckpt: dict[str, Any]) -> str:
    """The architecture a checkpoint dict records ("gaitssb" in files written before there were others)."""
    return str(ckpt.get("architecture", "gaitssb"))


def build_checkpoint(
    model: nn.Module,
    config: dict[str, Any],
    step: int,
    data: dict[str, int] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    head: nn.Module | None = None,
    world_size: int = 1,
) -> dict[str, Any]:
    """The checkpoint dict for `model` (wrappers are stripped, so keys match the bare network)."""
    network = bare_model(model)
    return {
        "format": FORMAT,
        "architecture": architecture_of(network).name,
        "model_config": config_to_dict(network.config),
        "config": config,
        "model": network.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "head": head.state_dict() if head is not None else None,  # training-only (a classifier)
        "step": step,
        "data": data,
        "rng": rng_state(),
        "world_size": world_size,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "torch_version": str(torch.__version__),
    }


def atomic_save(obj: Any, path: str | Path) -> Path:
    """`torch.save` to `path` atomically (`gaitlu.files.atomic_write`: temp file, fsync, rename)."""
    path = Path(path)
    with atomic_write(path) as f:
        torch.save(obj, f)
    return path


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in RUN_DIR/checkpoints, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_in_run(ckpt: dict[str, Any], run_dir: str | Path, keep_last: int) -> Path:
    """Save as RUN_DIR/checkpoints/step-XXXXXXXX.pt and delete all but the newest `keep_last`."""
    path = atomic_save(ckpt, Path(run_dir) / CHECKPOINT_DIR / checkpoint_name(ckpt["step"]))
    for _, old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, checked for our format; DataError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise DataError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise DataError(
            f"{path}: not a {FORMAT} checkpoint (format {found!r}); "
            "OpenGait checkpoints go through `gaitlu train import-opengait`"
        )
    return ckpt


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[GaitNetwork[NetworkConfig], dict[str, Any]]:
    """Rebuild the network a checkpoint holds (eval mode, on `map_location`) and return it with the dict."""
    ckpt = read_checkpoint(path, map_location)
    model = build_network(architecture_name(ckpt), ckpt["model_config"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise DataError(f"{path}: weights do not match its model_config: {exc}") from exc
    return model.to(map_location).eval(), ckpt

"""Optional DDP: detected from the environment, never required.

One process with no GPU and no process group is a first-class setup (OpenGait needs NCCL even for one
GPU; users ask, issues #153 and #214). Under `torchrun` the usual RANK / WORLD_SIZE / LOCAL_RANK
variables turn DDP on: NCCL on CUDA, gloo on CPU. Side effects (logs, checkpoints) are gated on the one
`Dist.is_master` flag; collectives here are no-ops when there is no process group.

Flags the loop checks every step (a SIGTERM on some rank) are agreed over a CPU (gloo) group, so
checking them never waits for the GPU: under NCCL a second, gloo group carries them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from gaitlu.errors import ConfigError

logger = logging.getLogger(__name__)

DeviceChoice = str  # "cpu" | "cuda" | "auto"


@dataclass(frozen=True)
class Dist:
    """Where this process sits: its rank among `world_size` processes and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    host_group: Any = None  # process group for CPU tensors (None: the default group, gloo on CPU)

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    """World size announced by torchrun (1 outside it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_device(choice: DeviceChoice, local_rank: int = 0) -> torch.device:
    """`auto` takes CUDA when present; asking for CUDA without one is a config error, not a crash later."""
    if choice not in ("cpu", "cuda", "auto"):
        raise ConfigError(f"--device must be cpu, cuda or auto, not {choice!r}")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but torch sees no CUDA GPU (use --device cpu)")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(choice: DeviceChoice) -> Dist:
    """Join the process group if torchrun started us (NCCL on CUDA, gloo on CPU); else run alone."""
    world_size = env_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(choice, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        logger.info("rank %d/%d joined the %s process group on %s", rank, world_size, backend, device)
    host_group = None
    if world_size > 1 and device.type == "cuda":  # NCCL cannot reduce CPU tensors; every rank makes it
        host_group = dist.new_group(backend="gloo")
    return Dist(rank=rank, local_rank=local_rank, world_size=world_size, device=device, host_group=host_group)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def gather_detached(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `x` along dim 0 in rank order, without gradient.

    The contrastive targets are stop-gradient, so no rank needs a gradient through another rank's
    copy; this rank's slice is detached too (the loss detaches targets anyway).
    """
    x = x.detach()
    if not dist.is_initialized():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)  # world x (N, ...) -> (world * N, ...)


def mean_across_ranks(x: torch.Tensor) -> torch.Tensor:
    """Average a metric over ranks (for logging only)."""
    if not dist.is_initialized():
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / dist.get_world_size()


def any_rank(flag: bool, info: Dist) -> bool:
    """True when the flag is set on any rank, so all ranks act at the same step (no hung collective).

    A CPU collective: the host does not wait for queued GPU work.
    """
    if not dist.is_initialized():
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=info.host_group)
    return bool(t.item())


def prepare_model(model: nn.Module, info: Dist) -> nn.Module:
    """SyncBatchNorm + DDP when several processes share the work; the model as is otherwise.

    SyncBatchNorm only runs on GPUs: CPU (gloo) DDP keeps per-rank batch statistics, and DDP
    broadcasts rank 0's running statistics at every forward.
    """
    if not info.enabled:
        return model
    if info.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif info.is_master:
        logger.warning("SyncBatchNorm needs GPUs: CPU DDP normalises with per-rank batch statistics")
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def launch_local(nproc: int, module: str, args: list[str]) -> int:
    """Run `python -m module args` in `nproc` local processes under torchrun; returns its exit code.

    torchrun sets RANK/WORLD_SIZE/LOCAL_RANK for each process and forwards SIGTERM to them.
    """
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        module,
        *args,
    ]
    logger.info("launching: %s", " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode

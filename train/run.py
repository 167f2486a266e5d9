"""The training loop both stages run (pretraining and fine-tuning), and everything around it they share.

A stage (train/pretrain.py, train/finetune.py) checks its inputs, builds its model, batches and loss,
and hands them to `train_loop`, which does the rest the same way for both:

- Resume: `prepare_run_dir` picks the checkpoint (`--resume`, or `--resume-if-exists` for preemptible
  jobs that rerun one command), and `check_resumable` refuses, in one message listing every
  difference, a checkpoint whose setup differs in anything that shapes the run: model, data,
  augmentation, loss, optimiser, schedule, precision, seed, number of processes. Only the trainer keys
  in `MAY_CHANGE` (and the stage's own, such as data-loader workers) may change.
- One step: the stage's forward and loss, then backward and SGD through one GradScaler (enabled for
  fp16 only, so there are no precision branches). When the scaler skips a step on an fp16 overflow,
  the LR schedule does not advance either (as OpenGait); the step still counts.
- The host waits for the device only at log and checkpoint steps: metrics accumulate on the device
  and are read back every `trainer.log_every` steps. (An enabled fp16 GradScaler reads its overflow
  flag every step: PyTorch's scaler works that way.)
- A non-finite loss stops the run with a `DivergedError` before it can reach a checkpoint: the loss
  is read back at log steps, and loss and weights are checked again before every save.
- SIGTERM (a scheduler's preemption): the current step finishes, a checkpoint is written, and the
  loop returns with `stopped` set; every process stops at the same step.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol, TypeVar

import torch
import yaml
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from gaitlu.errors import ConfigError, GaitluError
from gaitlu.files import write_atomic
from train import checkpoint, distributed
from train.config import (
    ConfigModel,
    OptimizerConfig,
    SchedulerConfig,
    TrainerConfig,
    TrainPrecision,
    build_config,
    config_to_dict,
    flatten,
    replace,
)
from train.network import GaitNetwork, NetworkConfig

logger = logging.getLogger(__name__)

AMP_DTYPES: dict[TrainPrecision, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
METRICS_FILE = "metrics.jsonl"

Resume = Literal["no", "yes", "if-exists"]  # no: a fresh run only; yes: a checkpoint must exist

# Keys a resume may change: they pace, place or speed up the run, they do not change what it computes.
MAY_CHANGE = frozenset(
    f"trainer.{key}"
    for key in (
        "max_steps",
        "checkpoint_every",
        "keep_last",
        "log_every",
        "compile",
        "channels_last",
        "deterministic",
    )
)
_HINTS = {"trainer.precision": " (a CPU runs fp16 as fp32, and bf16 only where it has native bf16)"}

Batch = TypeVar("Batch")


class DivergedError(GaitluError):
    """The loss (or the weights) stopped being finite; nothing from that point was saved."""


class StageConfig(Protocol):
    @property
    def trainer(self) -> TrainerConfig: ...


Config = TypeVar("Config", bound=StageConfig)


# ---------------------------------------------------------------------------------------------------
# Before the run: options, the run folder, resume compatibility


def resume_mode(resume: bool, if_exists: bool) -> Resume:
    """The CLI's two flags as one mode."""
    if resume and if_exists:
        raise ConfigError("pass --resume (a checkpoint must exist) or --resume-if-exists, not both")
    return "yes" if resume else "if-exists" if if_exists else "no"


def with_max_steps(config: Config, max_steps: int | None) -> Config:
    """`--max-steps` applied to a stage config (it is saved with the resolved config)."""
    if max_steps is None:
        return config
    # the trainer as a mapping, so that a refused value is named by its path (trainer.max_steps)
    return replace(config, trainer={**dict(config.trainer), "max_steps": max_steps})


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def to_channels_last(model: ModuleT) -> ModuleT:
    """NHWC weights for 2-D convolutions and NDHWC for 3-D ones, in place: `Module.to(memory_format=
    torch.channels_last)` refuses a network with any 5-D weight (DeepGaitV2's P3D blocks)."""
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            module.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        elif isinstance(module, nn.Conv2d):
            module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AVX512-BF16 or AMX): there bf16 autocast is several
    times faster than fp32; elsewhere it is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def effective_trainer(trainer: TrainerConfig, device: torch.device) -> TrainerConfig:
    """The trainer as this device runs it: `auto` precision is fp16 on CUDA, bf16 on a CPU with native
    bf16 and fp32 on any other CPU; a CPU runs fp16 (emulated, slow) and bf16 without native support as
    fp32, and never compiles (compile does not pay on CPU). channels_last is honoured everywhere."""
    if device.type == "cuda":
        return trainer if trainer.precision != "auto" else replace(trainer, precision="fp16")
    bf16 = cpu_has_bf16()
    precision = trainer.precision
    if precision == "auto":
        precision = "bf16" if bf16 else "fp32"
    elif precision == "fp16" or (precision == "bf16" and not bf16):
        precision = "fp32"
    changed: dict[str, Any] = {
        k: v for k, v in (("precision", precision), ("compile", False)) if getattr(trainer, k) != v
    }
    if changed:
        logger.info("on CPU: using %s", ", ".join(f"{k}={v}" for k, v in changed.items()))
    return replace(trainer, **changed)


def prepare_run_dir(run_dir: Path, resume: Resume) -> Path | None:
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
    if resume == "yes" and latest is None:
        raise ConfigError(f"--resume: no checkpoint in {run_dir / checkpoint.CHECKPOINT_DIR}")
    if resume == "no" and latest is not None:
        raise ConfigError(
            f"{run_dir} already holds checkpoints: pass --resume (or --resume-if-exists),"
            " or choose another --out"
        )
    return latest


def check_resumable(
    ckpt: dict[str, Any],
    path: Path,
    config: Any,
    model: NetworkConfig,
    world_size: int,
    may_change: frozenset[str] = frozenset(),
) -> None:
    """Refuse (ConfigError listing every difference) a checkpoint trained with another setup.

    `config` is the stage's config model as this run resolved it (CPU adjustments applied), `model`
    the architecture it would build. Changing anything but `MAY_CHANGE | may_change` would silently
    not continue the run (optimiser and schedule state override the config; a different data, seed or
    number of processes changes the stream), or fail halfway through loading (another precision's
    grad scaler, another model).
    """
    assert isinstance(config, ConfigModel) and isinstance(model, ConfigModel), "config models expected"
    sections = set(type(config).model_fields)
    try:
        saved = build_config(type(config), {k: v for k, v in ckpt["config"].items() if k in sections})
        saved_model = build_config(type(model), ckpt["model_config"])
    except ConfigError as exc:
        raise ConfigError(f"--resume: {path} holds a config this version cannot read ({exc})") from None
    ours = flatten({**config_to_dict(config), "model": config_to_dict(model)})
    theirs = flatten({**config_to_dict(saved), "model": config_to_dict(saved_model)})
    free = MAY_CHANGE | may_change
    lines = [
        f"  {key}: {theirs.get(key, '(absent)')} in the checkpoint, {ours.get(key, '(absent)')} here"
        + _HINTS.get(key, "")
        for key in sorted(ours.keys() | theirs.keys())
        if key not in free and ours.get(key) != theirs.get(key)
    ]
    trained_by = int(ckpt.get("world_size", 1))
    if trained_by != world_size:
        lines.append(
            f"  processes: {trained_by} trained it, this run has {world_size} (each process's batch share,"
            f" BatchNorm batches and RNG state are those of {trained_by}: resume with {trained_by})"
        )
    if lines:
        raise ConfigError(
            f"--resume: {path} was trained with a different setup; to continue it, these must match:\n"
            + "\n".join(lines)
            + "\nTo train with the new setup, start a new run in another --out."
        )


@contextmanager
def torch_settings(trainer: TrainerConfig) -> Iterator[None]:
    """Deterministic algorithms and cuDNN autotuning as the trainer asks; restored afterwards, so a run
    inside a test or a notebook leaves the process as it found it."""
    deterministic, benchmark = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    if trainer.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not trainer.deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = benchmark


# ---------------------------------------------------------------------------------------------------
# What a checkpoint restores, and one optimiser step


@dataclass
class TrainState:
    """The bare model (what checkpoints hold, never a DDP or compile wrapper) and its optimiser state."""

    model: GaitNetwork[NetworkConfig]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    head: nn.Module | None = None  # a training-only head (a classifier): checkpointed, never exported

    @classmethod
    def create(
        cls,
        model: GaitNetwork[NetworkConfig],
        params: Iterable[Any],
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        precision: TrainPrecision,
        device: torch.device,
        head: nn.Module | None = None,
    ) -> TrainState:
        """The optimiser `optimizer.solver` names (SGD with momentum: the GaitSSB and most zoo recipes;
        Adam: GaitGL's) and a multi-step schedule."""
        opt: torch.optim.Optimizer
        if optimizer.solver == "adam":
            opt = torch.optim.Adam(params, lr=optimizer.lr, weight_decay=optimizer.weight_decay)
        else:
            opt = torch.optim.SGD(
                params, lr=optimizer.lr, momentum=optimizer.momentum, weight_decay=optimizer.weight_decay
            )
        steps = torch.optim.lr_scheduler.MultiStepLR(opt, list(scheduler.milestones), scheduler.gamma)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        return cls(model, opt, steps, scaler, head)

    def restore(self, ckpt: dict[str, Any]) -> int:
        """Load a checkpoint's states (after `check_resumable`); returns its step."""
        self.model.load_state_dict(ckpt["model"])
        if self.head is not None:
            self.head.load_state_dict(ckpt["head"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        checkpoint.restore_rng_state(ckpt["rng"])
        return int(ckpt["step"])


def optimizer_step(loss: torch.Tensor, state: TrainState) -> bool:
    """Backward and one SGD step through the grad scaler; False when the scaler skipped the step
    (fp16 gradients overflowed: it lowers its scale instead), and then the LR schedule does not
    advance either. A disabled scaler (fp32, bf16) never skips and never touches the host."""
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    scale = state.scaler.get_scale()  # 1.0 when disabled; an enabled scaler synced in step() already
    state.scaler.update()
    applied = state.scaler.get_scale() >= scale
    if applied:
        state.scheduler.step()
    return applied


def all_finite(module: nn.Module) -> bool:
    """Whether every floating-point weight and buffer is finite (one host sync)."""
    flags = [t.isfinite().all() for t in module.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack(flags).all())


# ---------------------------------------------------------------------------------------------------
# SIGTERM


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


# ---------------------------------------------------------------------------------------------------
# The loop


@dataclass(frozen=True)
class RunSpec:
    """Where and how a loop runs; all decided before the first step."""

    trainer: TrainerConfig  # as resolved for the device (see effective_trainer)
    config: dict[str, Any]  # the resolved config: RUN_DIR/config.yaml and every checkpoint
    run_dir: Path
    info: distributed.Dist
    tag: str  # "pretrain" | "finetune": TensorBoard scalar names
    samples_per_step: int  # sequences per step over all processes (for sequences_per_s)

    def autocast(self) -> torch.autocast:
        """The forward's autocast region (a no-op in fp32); losses compute in float32 themselves."""
        precision = self.trainer.precision
        device = self.info.device.type
        return torch.autocast(device_type=device, dtype=AMP_DTYPES[precision], enabled=precision != "fp32")


@dataclass(frozen=True)
class RunResult:
    """What a finished (or SIGTERM-stopped) run leaves: the bare model and where it stopped."""

    model: GaitNetwork[NetworkConfig]
    step: int
    stopped: bool  # True when a SIGTERM ended the run before max_steps
    checkpoint: Path | None  # the newest checkpoint in RUN_DIR


def train_loop(
    spec: RunSpec,
    state: TrainState,
    batches: Iterable[Batch],
    loss_of: Callable[[Batch], tuple[torch.Tensor, torch.Tensor]],
    start_step: int = 0,
    position: Callable[[Batch], dict[str, int]] | None = None,
    after_update: Callable[[], None] | None = None,
) -> RunResult:
    """Train from `start_step` to `trainer.max_steps` (see the module docstring).

    loss_of(batch) -> (loss, accuracy), device scalars: the stage's forward (under `spec.autocast()`)
    and loss. position(batch) -> where the data stream stands after the batch: saved as the
    checkpoint's `data` and shown in metrics lines. after_update() runs after each step (LR floors).
    The caller has put the model in training mode.
    """
    t, info = spec.trainer, spec.info
    step, saved, stopped = start_step, None, False
    if step >= t.max_steps:
        logger.info("nothing to do: the run is at step %d, trainer.max_steps is %d", step, t.max_steps)
    stream = iter(batches)
    with StopFlag() as stop, RunLog(spec, start_step) as log:
        while step < t.max_steps:
            batch = next(stream)
            loss, accuracy = loss_of(batch)
            applied = optimizer_step(loss, state)
            if after_update is not None:
                after_update()
            step += 1
            where = position(batch) if position is not None else {}
            log.accumulate(loss, accuracy, skipped=not applied)
            if step % t.log_every == 0 or step == t.max_steps:
                first = log.first
                record = log.summary(step, state.optimizer.param_groups[-1]["lr"], where)  # reads the device
                if not math.isfinite(record["loss"]):
                    steps = f"step {step}" if first == step else f"steps {first}-{step}"
                    raise diverged(spec.run_dir, f"the loss of {steps} is {record['loss']}")
                log.write(record)
            stopped = distributed.any_rank(stop.set, info)
            if step % t.checkpoint_every == 0 or step == t.max_steps or stopped:
                if distributed.any_rank(not (log.window_finite() and all_finite(state.model)), info):
                    raise diverged(spec.run_dir, f"the loss or the weights are not finite at step {step}")
                if info.is_master:
                    saved = _save_checkpoint(spec, state, step, where)
                distributed.barrier()
            if stopped:
                break
    newest = saved if saved is not None else checkpoint.latest_checkpoint(spec.run_dir)
    return RunResult(state.model, step, stopped=stopped and step < t.max_steps, checkpoint=newest)


def _save_checkpoint(spec: RunSpec, state: TrainState, step: int, where: dict[str, int]) -> Path:
    """Rank 0: everything a resume needs at `step` (the data stream's position `where` included), saved
    in the run folder, which keeps the newest `trainer.keep_last`."""
    ckpt = checkpoint.build_checkpoint(
        state.model,
        spec.config,
        step,
        data=where or None,
        optimizer=state.optimizer,
        scheduler=state.scheduler,
        scaler=state.scaler,
        head=state.head,
        world_size=spec.info.world_size,
    )
    saved = checkpoint.save_in_run(ckpt, spec.run_dir, spec.trainer.keep_last)
    logger.info("step %d: checkpoint %s", step, saved)
    return saved


def diverged(run_dir: Path, what: str) -> DivergedError:
    newest = checkpoint.latest_checkpoint(run_dir)
    kept = f"the newest checkpoint, {newest}, is from before" if newest else "no checkpoint was written"
    return DivergedError(
        f"{what}: training stopped without saving it ({kept}). Lower the learning rate(s) (in fp16, "
        "bf16 or fp32 may also help) and start a new run in another --out"
    )


class RunLog:
    """Rank 0's outputs: progress bar, TensorBoard (RUN_DIR/tb), RUN_DIR/metrics.jsonl, RUN_DIR/config.yaml.

    Loss and accuracy accumulate on the device; `summary` reads them back (the loop's only regular
    host sync). Other ranks accumulate and join the cross-rank mean (a collective) but write nothing.
    """

    def __init__(self, spec: RunSpec, start_step: int) -> None:
        self.enabled = spec.info.is_master
        self.tag = spec.tag
        self.samples_per_step = spec.samples_per_step
        self._reset(start_step)
        if not self.enabled:
            return
        run_dir = spec.run_dir
        write_atomic(run_dir / "config.yaml", yaml.safe_dump(spec.config, sort_keys=False))
        self.metrics_path = run_dir / METRICS_FILE
        truncate_metrics(self.metrics_path, start_step)
        self.writer = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=start_step)
        self.bar = tqdm(
            total=spec.trainer.max_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr
        )

    def _reset(self, last_step: int) -> None:
        self.first = last_step + 1  # the first step of the current window
        self.loss_sum: torch.Tensor | None = None
        self.acc_sum: torch.Tensor | None = None
        self.count = 0
        self.skipped = 0
        self.clock = time.perf_counter()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.close()
            self.writer.close()

    def accumulate(self, loss: torch.Tensor, accuracy: torch.Tensor, skipped: bool) -> None:
        loss, accuracy = loss.detach(), accuracy.detach()
        self.loss_sum = loss.clone() if self.loss_sum is None else self.loss_sum + loss
        self.acc_sum = accuracy.clone() if self.acc_sum is None else self.acc_sum + accuracy
        self.count += 1
        self.skipped += skipped
        if self.enabled:
            self.bar.update(1)

    def window_finite(self) -> bool:
        """Whether every loss since the last summary was finite (a host sync; at checkpoint steps)."""
        return self.loss_sum is None or bool(torch.isfinite(self.loss_sum))

    def summary(self, step: int, lr: float, position: dict[str, int]) -> dict[str, Any]:
        """Means over the steps since the last summary and over ranks (all ranks must call this)."""
        assert self.loss_sum is not None and self.acc_sum is not None, "summary of an empty window"
        means = distributed.mean_across_ranks(torch.stack([self.loss_sum, self.acc_sum]) / self.count)
        loss, accuracy = means.tolist()
        now = time.perf_counter()
        record = {
            "step": step,
            **position,
            "loss": loss,
            "accuracy": accuracy,
            "lr": lr,
            "sequences_per_s": self.samples_per_step * self.count / (now - self.clock),
            "skipped_steps": self.skipped,  # updates the fp16 grad scaler skipped (always 0 otherwise)
        }
        self._reset(step)
        return record

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        for key in ("loss", "accuracy", "lr", "sequences_per_s"):
            self.writer.add_scalar(f"{self.tag}/{key}", record[key], record["step"])
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        lr = record["lr"]
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}", lr=f"{lr:.2g}")


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records after `last_step` (written after the checkpoint a resume starts from), atomically.
    Records are appended one line at a time (a log, not rewritten per step), so a crash mid-append can
    leave a torn last line: it is dropped too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn append (or an empty line)
        if record["step"] <= last_step:
            kept.append(line)
    write_atomic(path, "".join(f"{line}\n" for line in kept))

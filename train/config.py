"""Typed, strict experiment configs loaded from YAML.

One YAML per experiment with a few sections (model, data, optimizer, scheduler, trainer, ...), each a
frozen dataclass. Unknown keys are errors (OpenGait silently drops them, which hides typos), and the
resolved config is saved in every checkpoint.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from gaitlu.errors import ConfigError

T = TypeVar("T")

TrainPrecision = Literal["auto", "fp32", "fp16", "bf16"]  # training autocast; export precisions: the manifest


@dataclass(frozen=True)
class OptimizerConfig:
    """SGD with momentum (the GaitSSB recipe and most of OpenGait's), or Adam (GaitGL's)."""

    solver: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4


@dataclass(frozen=True)
class SchedulerConfig:
    """Multi-step LR: multiply by `gamma` at each milestone iteration."""

    milestones: tuple[int, ...] = (80_000, 120_000)
    gamma: float = 0.1


@dataclass(frozen=True)
class TrainerConfig:
    """The `trainer` section, the same for every training stage: what the run skeleton (train/run.py) does."""

    max_steps: int = 150_000
    # Autocast dtype. auto: fp16 (with a GradScaler) on CUDA, bf16 on a CPU with native bf16 (AVX512-BF16
    # or AMX: several times faster than fp32 there), fp32 on other CPUs (train/run.py::effective_trainer).
    precision: TrainPrecision = "auto"
    channels_last: bool = False  # NHWC convs: a win on GPU tensor cores and with bf16 on CPU
    compile: bool = False  # torch.compile the training forward; ignored on CPU
    checkpoint_every: int = 10_000
    keep_last: int = 3  # checkpoints kept in RUN_DIR/checkpoints
    log_every: int = 100  # also how often the host waits for the device (metrics are read back then)
    seed: int = 0  # initial weights and the data order / augmentation
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower; for tests and debugging)

    def __post_init__(self) -> None:
        for key in ("max_steps", "checkpoint_every", "keep_last", "log_every"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"trainer.{key} must be positive, got {getattr(self, key)}")
        if self.seed < 0:
            raise ConfigError(f"trainer.seed must be >= 0, got {self.seed}")


def _build(cls: Any, values: Any, where: str) -> Any:
    """Build `cls` (a dataclass, tuple, or scalar type) from YAML values, strictly."""
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = set(values) - names
        if unknown:
            raise ConfigError(f"{where or 'config'}: unknown keys {sorted(unknown)}; known: {sorted(names)}")
        kwargs = {k: _build(hints[k], v, f"{where}.{k}" if where else k) for k, v in values.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"{where or 'config'}: {exc}") from exc
    if cls is Any:
        return values
    origin = typing.get_origin(cls)
    args = typing.get_args(cls)
    if origin in (typing.Union, types.UnionType):
        if values is None and type(None) in args:
            return None
        errors = []
        for inner in (a for a in args if a is not type(None)):
            try:
                return _build(inner, values, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(" or ".join(errors))
    if origin is typing.Literal:
        if values not in args:
            raise ConfigError(f"{where}: {values!r} is not one of {list(args)}")
        return values
    if origin is tuple:
        if not isinstance(values, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {values!r}")
        return tuple(_build(args[0], v, f"{where}[{i}]") for i, v in enumerate(values))
    if origin is dict:
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: expected a mapping, got {values!r}")
        return {_build(args[0], k, where): _build(args[1], v, f"{where}.{k}") for k, v in values.items()}
    if cls is float:
        if isinstance(values, int | float) and not isinstance(values, bool):
            return float(values)
        raise ConfigError(f"{where}: expected a number, got {values!r}")
    if cls in (int, str, bool) and type(values) is not cls:
        raise ConfigError(f"{where}: expected {cls.__name__}, got {values!r}")
    return values


class ConfigLoader(yaml.SafeLoader):
    """YAML as a config author means it: `1e-3` and `5E4` are numbers (YAML 1.1, PyYAML's default, reads
    a float without a dot as a string; YAML 1.2 reads it as a number, and so do we)."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def build_config(cls: type[T], values: dict[str, Any]) -> T:
    """A config dataclass from a plain mapping (e.g. a checkpoint's saved config)."""
    config: T = _build(cls, values, "")
    return config


def load_config(path: str | Path, cls: type[T]) -> T:
    """Read a YAML experiment file into the dataclass `cls`, failing with a message that names the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = yaml.load(path.read_text(), Loader=ConfigLoader) or {}  # ConfigLoader is a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return build_config(cls, values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain, YAML/JSON-friendly mapping of a config dataclass (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    values: dict[str, Any] = plain(dataclasses.asdict(config))
    return values


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: dotted keys, as error messages and YAML paths name them."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat

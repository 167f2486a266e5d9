"""Typed, strict experiment configs loaded from YAML.

One YAML per experiment with a few sections (model, data, optimizer, scheduler, trainer, ...), each a
frozen pydantic model (`ConfigModel`). Unknown keys are errors (OpenGait silently drops them, which hides
typos), values are checked strictly (a number is a number, never a string or a bool; an int is accepted
where a float is asked), and the resolved config is saved in every checkpoint.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from gaitlu.errors import ConfigError

TrainPrecision = Literal["auto", "fp32", "fp16", "bf16"]  # training autocast; export precisions: the manifest


class ConfigModel(BaseModel):
    """A config section: frozen, unknown keys refused, strict types (no '1e-3' or True for a number, no
    NaN or infinity)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


Model = TypeVar("Model", bound=BaseModel)
T = TypeVar("T")


def _as_tuple(value: Any) -> Any:
    """YAML and JSON have lists where a config holds tuples; the items are still checked strictly."""
    return tuple(value) if isinstance(value, list) else value


Ints = Annotated[tuple[int, ...], BeforeValidator(_as_tuple)]
Floats = Annotated[tuple[float, ...], BeforeValidator(_as_tuple)]


class OptimizerConfig(ConfigModel):
    """SGD with momentum (the GaitSSB recipe and most of OpenGait's), or Adam (GaitGL's)."""

    solver: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4


class SchedulerConfig(ConfigModel):
    """Multi-step LR: multiply by `gamma` at each milestone iteration."""

    milestones: Ints = (80_000, 120_000)
    gamma: float = 0.1


class TrainerConfig(ConfigModel):
    """The `trainer` section, the same for every training stage: what the run skeleton (train/run.py) does."""

    max_steps: int = Field(150_000, gt=0)
    # Autocast dtype. auto: fp16 (with a GradScaler) on CUDA, bf16 on a CPU with native bf16 (AVX512-BF16
    # or AMX: several times faster than fp32 there), fp32 on other CPUs (train/run.py::effective_trainer).
    precision: TrainPrecision = "auto"
    channels_last: bool = False  # NHWC convs: a win on GPU tensor cores and with bf16 on CPU
    compile: bool = False  # torch.compile the training forward; ignored on CPU
    checkpoint_every: int = Field(10_000, gt=0)
    keep_last: int = Field(3, gt=0)  # checkpoints kept in RUN_DIR/checkpoints
    # also how often the host waits for the device (metrics are read back then)
    log_every: int = Field(100, gt=0)
    seed: int = Field(0, ge=0)  # initial weights and the data order / augmentation
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower; for tests and debugging)


def replace(config: T, **changes: Any) -> T:
    """A copy of the config model `config` with `changes`, validated as the original was (`model_copy`
    checks nothing)."""
    if not isinstance(config, BaseModel):
        raise TypeError(f"not a config model: {type(config).__name__}")
    copy: T = build_config(type(config), {**dict(config), **changes})
    return copy


def _path(loc: tuple[int | str, ...], where: str) -> str:
    """("scheduler", "milestones", 1) -> "scheduler.milestones[1]", under `where` when given."""
    text = where
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "config"


def _section(cls: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model that holds the key at `loc` (to list its keys), if `loc` walks through models only."""
    for part in loc[:-1]:
        field = cls.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        cls = annotation
    return cls


def _problem(cls: type[BaseModel], error: Any, where: str) -> str:
    """One validation error as `key.path: what is wrong, got VALUE`."""
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        section = _section(cls, loc)
        known = f"; known: {sorted(section.model_fields)}" if section is not None else ""
        return f"{_path(loc, where)}: unknown key{known}"
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    if error["type"] == "missing" or "input" not in error:
        return f"{_path(loc, where)}: {message}"
    return f"{_path(loc, where)}: {message}, got {error['input']!r}"


def build_config(cls: type[Model], values: Any, where: str = "") -> Model:
    """A config model from a plain mapping (a YAML file's, a checkpoint's saved config); ConfigError
    naming each wrong key by its path (`optimizer.lr: ...`), under `where` for a nested mapping."""
    try:
        return cls.model_validate({} if values is None else values)
    except ValidationError as exc:
        raise ConfigError("; ".join(_problem(cls, e, where) for e in exc.errors())) from None
    except ConfigError as exc:  # a check across keys, whose message names them
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None


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


def load_config(path: str | Path, cls: type[Model]) -> Model:
    """Read a YAML experiment file into the config model `cls`, failing with a message that names the key."""
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
    """Plain, YAML/JSON-friendly mapping of a config model (tuples become lists)."""
    if not isinstance(config, BaseModel):
        raise TypeError(f"not a config model: {type(config).__name__}")

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    values: dict[str, Any] = plain(config.model_dump())
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

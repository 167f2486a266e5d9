"""Import an OpenGait checkpoint as a gaitlu checkpoint: GaitBase, DeepGaitV2, GaitSet, GaitGL, GaitSSB.

OpenGait saves `torch.save({"model", "optimizer", "scheduler", "iteration"})`. The architecture cannot
be read from the weights alone (strides, pyramid bins, GaitGL's dataset-chosen branch leave no trace in
the shapes), so `--config` names OpenGait's YAML: its `model_cfg` builds our network through
train/zoo/opengait_models.py, its `evaluator_cfg` is recorded so `gaitlu eval` scores the model as
OpenGait does. GaitSSB alone can be imported without a config: its channels come from the weight shapes,
its form from the keys (`head0`: fine-tuned, `predictor`: pretrained), its strides are GaitSSB's.

Every key must have a counterpart with the same shape. The only keys left out are the training-only
weights OpenGait's evaluator never touches (BNNeck classifiers, GaitGL's `Head1`), and only after their
shapes are checked against the config; the checkpoint lists them. Anything else (an extra block, a
missing statistic, a width the config does not give) is refused with every offending key, never
dropped. The imported checkpoint records its source: OpenGait model name, config, file hashes.

Files are read with `torch.load(weights_only=True)`: a checkpoint from the internet cannot run code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import yaml

from gaitlu.errors import ConfigError, DataError
from gaitlu.files import sha256_file
from gaitlu.manifest import Evaluation
from train.checkpoint import atomic_save, build_checkpoint
from train.config import config_to_dict
from train.model import ModelConfig
from train.network import GaitNetwork, NetworkConfig
from train.zoo.opengait_models import GAITSSB_FINETUNE, GAITSSB_PRETRAIN, OpenGaitModel, opengait_model
from train.zoo.registry import build_network

logger = logging.getLogger(__name__)

FormChoice = Literal["auto", "pretrain", "finetune"]
FORMS: tuple[str, ...] = get_args(FormChoice)

_PREFIXES = ("module.",)  # DistributedDataParallel's wrapper, possibly nested
_STEM = "Backbone.forward_block.conv1.conv.weight"
_STAGE_CONV = "Backbone.forward_block.layer{}.0.conv1.weight"
# OpenGait's configs/default.yaml evaluator_cfg, which every config is merged over.
_EVALUATOR_DEFAULTS = {
    "metric": "euc",
    "eval_func": "evaluate_indoor_dataset",
    "enable_float16": False,
    "cross_view_gallery": False,
}


@dataclass(frozen=True)
class Conversion:
    """An OpenGait state dict in our names, and the training-only OpenGait keys that were left out."""

    state: dict[str, torch.Tensor]
    dropped: list[str]


def _strip_prefixes(key: str) -> str:
    while key.startswith(_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def convert(
    opengait: Mapping[str, Any], spec: OpenGaitModel, config: Any, model_cfg: Mapping[str, Any]
) -> Conversion:
    """Map an OpenGait state dict onto our architecture `spec.architecture` built with `config`;
    DataError lists every unknown, missing or mis-shaped key (OpenGait names)."""
    state = {_strip_prefixes(k): v for k, v in opengait.items()}
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise DataError(f"the model state holds non-tensor entries: {not_tensors}")
    ours = build_network(spec.architecture, config).state_dict()
    names = {spec.opengait_key(config, key): key for key in ours}  # OpenGait key -> our key
    training_only = spec.training_only(model_cfg, config)

    converted: dict[str, torch.Tensor] = {}
    dropped, unknown, mismatched = [], [], []
    for key, value in state.items():
        if key in names:
            expected = tuple(ours[names[key]].shape)
            converted[names[key]] = value.to(ours[names[key]].dtype)  # fp16 saves load as fp32
        elif key in training_only:
            expected = training_only[key]
            dropped.append(key)
        else:
            unknown.append(key)
            continue
        if tuple(value.shape) != expected:
            mismatched.append(f"{key}: {tuple(value.shape)} in the file, {expected} expected")
    missing = sorted(k for k in names if k not in state)
    problems = []
    if unknown:
        problems.append(f"unknown keys: {sorted(unknown)}")
    if missing:
        problems.append(f"missing keys: {missing}")
    if mismatched:
        problems.append(f"shape mismatches: {sorted(mismatched)}")
    if problems:
        raise DataError(
            f"the weights do not fit {spec.architecture} with {config_to_dict(config)}: "
            + "; ".join(problems)
        )
    return Conversion(converted, sorted(dropped))


def _infer_gaitssb(state: Mapping[str, torch.Tensor], form: FormChoice) -> tuple[OpenGaitModel, ModelConfig]:
    """GaitSSB without a config: channels from the stage convs' shapes, form from the keys."""
    missing = [k for k in (_STEM, *(_STAGE_CONV.format(i) for i in range(1, 5))) if k not in state]
    if missing:
        raise DataError(
            f"not an OpenGait GaitSSB checkpoint: missing backbone keys {missing} "
            "(other OpenGait models need --config with their YAML)"
        )
    channels = tuple(int(state[_STAGE_CONV.format(i)].shape[0]) for i in range(1, 5))
    if form == "auto":
        has_head = "head0.fc_bin" in state
        has_predictor = any(k.startswith("predictor.") for k in state)
        if has_head == has_predictor:
            raise DataError(
                "cannot tell the checkpoint's form (it holds "
                + ("both head0 and a predictor" if has_head else "neither head0 nor a predictor")
                + "); pass --form pretrain or --form finetune"
            )
        form = "finetune" if has_head else "pretrain"
    spec = GAITSSB_FINETUNE if form == "finetune" else GAITSSB_PRETRAIN
    return spec, ModelConfig(channels=channels, form=form)


def convert_state_dict(
    opengait: Mapping[str, Any], form: FormChoice = "auto"
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Map an OpenGait GaitSSB state dict (no config needed) onto our GaitSSB."""
    state = {_strip_prefixes(k): v for k, v in opengait.items()}
    spec, config = _infer_gaitssb(state, form)
    return config, convert(state, spec, config, {}).state


def read_opengait(path: str | Path) -> tuple[dict[str, Any], int | None]:
    """(model state dict, iteration) from an OpenGait checkpoint file (or a bare state dict file)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"OpenGait checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign, truncated or code-carrying files
        raise DataError(
            f"{path}: not loadable as weights-only ({type(exc).__name__}: {exc}); files that need "
            "arbitrary unpickling are refused"
        ) from exc
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a dict with a 'model' entry, got {type(raw).__name__}")
    if "model" in raw:
        iteration = raw.get("iteration")
        return raw["model"], int(iteration) if isinstance(iteration, int) else None
    return raw, None


def read_opengait_config(path: str | Path) -> dict[str, Any]:
    """An OpenGait YAML (a full experiment config, or at least its `model_cfg`) as a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"OpenGait config not found: {path}")
    try:
        cfg = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_cfg"), dict):
        raise ConfigError(f"{path}: an OpenGait config needs a `model_cfg` mapping")
    for section in ("data_cfg", "evaluator_cfg"):
        if not isinstance(cfg.get(section) or {}, dict):
            raise ConfigError(f"{path}: `{section}` must be a mapping")
    return cfg


def evaluation_settings(cfg: Mapping[str, Any], path: Path) -> Evaluation:
    """OpenGait's test settings for this config: its evaluator_cfg over OpenGait's defaults."""
    given = cfg.get("evaluator_cfg") or {}
    evaluator = {**_EVALUATOR_DEFAULTS, **given}
    sampler = evaluator.get("sampler") or {}
    data = cfg.get("data_cfg") or {}
    if evaluator["metric"] not in ("euc", "cos"):
        raise ConfigError(f"{path}: evaluator_cfg.metric {evaluator['metric']!r} is not euc or cos")
    limit = sampler.get("frames_all_limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"{path}: evaluator_cfg.sampler.frames_all_limit must be a positive integer")
    source = (
        f"evaluator_cfg of {path.name}"
        if given
        else f"OpenGait's defaults ({path.name} has no evaluator_cfg)"
    )
    return Evaluation(
        metric=evaluator["metric"],
        frames_limit=limit,
        sample_type=str(sampler.get("sample_type", "all_ordered")),
        eval_func=str(evaluator["eval_func"]),
        dataset=data.get("test_dataset_name") or data.get("dataset_name"),
        enable_float16=bool(evaluator["enable_float16"]),
        cross_view_gallery=bool(evaluator["cross_view_gallery"]),
        source=source,
    )


def import_opengait(
    src: str | Path, out: str | Path, form: str = "auto", config: str | Path | None = None
) -> GaitNetwork[NetworkConfig]:
    """Convert `src` (with OpenGait YAML `config`, needed for every model but GaitSSB) and write a gaitlu
    checkpoint to `out` atomically; returns the loaded model in eval mode."""
    if form not in FORMS:
        raise ConfigError(f"form must be one of {', '.join(FORMS)}, not {form!r}")
    if config is not None and form != "auto":
        raise ConfigError("--form applies only without --config (the config names the model)")
    raw_state, iteration = read_opengait(src)
    state = {_strip_prefixes(k): v for k, v in raw_state.items()}
    src = Path(src)
    imported: dict[str, Any] = {"source": "opengait", "path": str(src), "sha256": sha256_file(src)}
    evaluation = None
    if config is not None:
        config_path = Path(config)
        cfg = read_opengait_config(config_path)
        model_cfg = cfg["model_cfg"]
        spec = opengait_model(model_cfg.get("model"))
        data_cfg = cfg.get("data_cfg") or {}
        try:
            ours = spec.read_config(model_cfg, str(data_cfg.get("dataset_name", "")))
        except ConfigError as exc:
            raise ConfigError(f"{config_path}: {exc}") from exc
        evaluation = evaluation_settings(cfg, config_path)
        imported |= {
            "model": model_cfg["model"],
            "config": str(config_path),
            "config_sha256": sha256_file(config_path),
            "model_cfg": model_cfg,
            "dataset_name": data_cfg.get("dataset_name"),
        }
    else:
        model_cfg = {}
        spec, ours = _infer_gaitssb(state, form)  # type: ignore[arg-type]  # a FormChoice: checked above
        imported["model"] = f"GaitSSB_{ours.form.capitalize()} (inferred from the weights)"
    try:
        conversion = convert(state, spec, ours, model_cfg)
    except DataError as exc:
        raise DataError(f"{src}: {exc}") from exc
    model = build_network(spec.architecture, ours)
    model.load_state_dict(conversion.state)
    imported |= {"iteration": iteration, "dropped_keys": conversion.dropped}
    record: dict[str, Any] = {"imported": imported}
    if evaluation is not None:
        record["evaluation"] = evaluation.model_dump()
    atomic_save(build_checkpoint(model, record, step=iteration or 0), out)
    logger.info(
        "imported %s (%s as %s, %d training-only keys left out) to %s",
        src,
        imported["model"],
        spec.architecture,
        len(conversion.dropped),
        out,
    )
    return model.eval()

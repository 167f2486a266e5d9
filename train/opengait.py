"""Import an OpenGait GaitSSB checkpoint (pretrain or finetune form) as a gaitlu checkpoint.

OpenGait saves `torch.save({"model", "optimizer", "scheduler", "iteration"})`; its GaitSSB keys map one
to one onto ours (docs/opengait.md has the table):

    Backbone.forward_block.conv1.conv.weight     backbone.conv1.weight      (stem conv in BasicConv2d)
    Backbone.forward_block.bn1.*                 backbone.bn1.*
    Backbone.forward_block.layer{i}.0.*          backbone.layers.{i-1}.*    (torchvision BasicBlock names)
    projector.{0,3}.fc_bin, predictor.{0,3}.fc_bin   *.weight           (P, in, out), applied as x @ W
    projector.{1,4}.bn1d.*, predictor.1.bn1d.*       *.bn.*             BatchNorm1d over C*P, c*P + p
    head0.fc_bin                                 head.weight                (weight-normalised per part)

Layouts are identical, so values are copied unchanged. Channel widths are read from the weight shapes;
strides cannot be (a stride does not change a weight's shape), so the GaitSSB strides (1, 2, 2, 1) are
assumed and the pyramid must give the 31 parts of bins 16/8/4/2/1. The form is `finetune` when the file
holds `head0`, `pretrain` when it holds a predictor. Anything unexpected (an extra block per stage, a
missing key, a shape that disagrees) is refused with the full list, never silently dropped.

The file is read with `torch.load(weights_only=True)`: a checkpoint from the internet cannot run code.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from gaitlu.errors import ConfigError, DataError
from train.checkpoint import atomic_save, build_checkpoint
from train.model import GaitSSB, ModelConfig

logger = logging.getLogger(__name__)

FormChoice = Literal["auto", "pretrain", "finetune"]
FORMS = ("auto", "pretrain", "finetune")

_PREFIXES = ("module.",)  # DistributedDataParallel's wrapper, possibly nested
_STEM = "Backbone.forward_block.conv1.conv.weight"
_STAGE_CONV = "Backbone.forward_block.layer{}.0.conv1.weight"


def _strip_prefixes(key: str) -> str:
    while key.startswith(_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def rename_key(key: str) -> str | None:
    """Our name for an OpenGait GaitSSB key, or None when the key has no counterpart."""
    if key == _STEM:
        return "backbone.conv1.weight"
    if key == "head0.fc_bin":
        return "head.weight"
    if m := re.fullmatch(r"Backbone\.forward_block\.bn1\.(\w+)", key):
        return f"backbone.bn1.{m[1]}"
    if m := re.fullmatch(r"Backbone\.forward_block\.layer([1-4])\.0\.(.+)", key):
        return f"backbone.layers.{int(m[1]) - 1}.{m[2]}"  # block names match torchvision's BasicBlock
    if m := re.fullmatch(r"(projector|predictor)\.(\d+)\.fc_bin", key):
        return f"{m[1]}.{m[2]}.weight"
    if m := re.fullmatch(r"(projector|predictor)\.(\d+)\.bn1d\.(\w+)", key):
        return f"{m[1]}.{m[2]}.bn.{m[3]}"
    return None


def _infer_config(state: Mapping[str, torch.Tensor], form: FormChoice) -> ModelConfig:
    missing = [k for k in (_STEM, *(_STAGE_CONV.format(i) for i in range(1, 5))) if k not in state]
    if missing:
        raise DataError(f"not an OpenGait GaitSSB checkpoint: missing backbone keys {missing}")
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
    return ModelConfig(channels=channels, form=form)


def convert_state_dict(
    opengait: Mapping[str, Any], form: FormChoice = "auto"
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Map an OpenGait GaitSSB state dict onto our GaitSSB; DataError lists every key that does not fit."""
    state = {_strip_prefixes(k): v for k, v in opengait.items()}
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise DataError(f"the model state holds non-tensor entries: {not_tensors}")
    config = _infer_config(state, form)
    expected = GaitSSB(config).state_dict()

    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        ours = rename_key(key)
        if ours is None or ours not in expected:
            unknown.append(key)
        else:
            converted[ours] = value
    mismatched = [
        f"{key}: {tuple(value.shape)} in the file, {tuple(expected[key].shape)} expected"
        for key, value in converted.items()
        if value.shape != expected[key].shape
    ]
    missing = sorted(set(expected) - set(converted))
    problems = []
    if unknown:
        problems.append(f"unknown keys (no counterpart in {config.form}-form GaitSSB): {sorted(unknown)}")
    if missing:
        problems.append(f"missing keys (our names): {missing}")
    if mismatched:
        problems.append(f"shape mismatches: {mismatched}")
    if problems:
        raise DataError(
            f"the checkpoint does not fit GaitSSB with channels {config.channels}, "
            f"{config.parts} parts, form {config.form}: " + "; ".join(problems)
        )
    converted = {k: v.to(expected[k].dtype) for k, v in converted.items()}  # fp16 saves load as fp32
    return config, converted


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


def import_opengait(src: str | Path, out: str | Path, form: str = "auto") -> GaitSSB:
    """Convert `src` and write a gaitlu checkpoint to `out` (atomically); returns the loaded model."""
    if form not in FORMS:
        raise ConfigError(f"form must be one of {', '.join(FORMS)}, not {form!r}")
    state, iteration = read_opengait(src)
    try:
        config, converted = convert_state_dict(state, form)
    except DataError as exc:
        raise DataError(f"{src}: {exc}") from exc
    model = GaitSSB(config)
    model.load_state_dict(converted)
    source = {"source": "opengait", "path": str(src), "iteration": iteration}
    atomic_save(build_checkpoint(model, {"imported": source}, step=iteration or 0), out)
    logger.info("imported %s (%s form, channels %s) to %s", src, config.form, config.channels, out)
    return model.eval()

"""Our architectures by name: what checkpoints and artifact manifests record, and how to rebuild one.

Every network here is a `train.network.GaitNetwork`: a pure forward, (N, T, 64, 44) float silhouettes in
[0, 1] -> (N, P, C) float32 embedding, its `config` (whose `layout` says parts x channels and the
normalisation: "none" for raw features, "per-part-l2" where the model itself normalises each part) and
`min_frames`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from gaitlu.errors import ConfigError
from train.config import ConfigModel, build_config
from train.model import GaitSSB, ModelConfig
from train.network import GaitNetwork, NetworkConfig
from train.zoo.deepgaitv2 import DeepGaitV2, DeepGaitV2Config
from train.zoo.gaitbase import GaitBase, GaitBaseConfig
from train.zoo.gaitgl import GaitGL, GaitGLConfig
from train.zoo.gaitset import GaitSet, GaitSetConfig


@dataclass(frozen=True)
class Architecture:
    name: str  # recorded in checkpoints ("architecture") and manifests ("model.name")
    network: type[GaitNetwork[NetworkConfig]]
    config: type[ConfigModel]  # the frozen config model the network takes


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("gaitssb", GaitSSB, ModelConfig),
        Architecture("gaitbase", GaitBase, GaitBaseConfig),
        Architecture("deepgaitv2", DeepGaitV2, DeepGaitV2Config),
        Architecture("gaitset", GaitSet, GaitSetConfig),
        Architecture("gaitgl", GaitGL, GaitGLConfig),
    )
}


def architecture(name: str) -> Architecture:
    """The architecture called `name`; ConfigError naming the known ones otherwise."""
    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def architecture_of(model: nn.Module) -> Architecture:
    """The registered architecture `model` is an instance of (TypeError for anything else)."""
    for arch in ARCHITECTURES.values():
        if type(model) is arch.network:
            return arch
    raise TypeError(f"{type(model).__name__} is not a registered architecture ({', '.join(ARCHITECTURES)})")


def build_network(name: str, config: Any) -> GaitNetwork[NetworkConfig]:
    """A fresh network of architecture `name` from its config model or a plain mapping of it."""
    arch = architecture(name)
    if isinstance(config, dict):
        config = build_config(arch.config, config)
    if not isinstance(config, arch.config):
        raise TypeError(f"{name} takes a {arch.config.__name__}, not {type(config).__name__}")
    return arch.network(config)

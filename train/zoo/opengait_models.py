"""OpenGait's model classes and how each maps onto one of our architectures.

For every supported OpenGait `model_cfg['model']` this holds: the reading of its `model_cfg` into our
config (strict: an unknown key is an error, OpenGait's own defaults apply where a key is absent), the
OpenGait name of each of our state-dict keys, and the OpenGait weights the embedding does not use
(BNNeck classifiers and other training-only heads) with the shapes OpenGait gives them, so an importer
can check them before leaving them out. The facts come from OpenGait's model files (baseline.py,
deepgaitv2.py, gaitset.py, gaitgl.py, gaitssb.py, modules.py, backbones/resnet.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gaitlu.errors import ConfigError
from train.model import ModelConfig
from train.zoo.deepgaitv2 import PARTS as DEEPGAITV2_PARTS
from train.zoo.deepgaitv2 import DeepGaitV2Config
from train.zoo.gaitbase import GaitBaseConfig
from train.zoo.gaitgl import PARTS as GAITGL_PARTS
from train.zoo.gaitgl import GaitGLBranch, GaitGLConfig
from train.zoo.gaitset import GaitSetConfig

Shapes = dict[str, tuple[int, ...]]
Rules = tuple[tuple[str, str], ...]  # (regex over our key, OpenGait template with \1 ...), first match wins


@dataclass(frozen=True)
class OpenGaitModel:
    """One OpenGait model class: our architecture, its config reader, key names, training-only weights."""

    architecture: str
    read_config: Callable[[Mapping[str, Any], str], Any]  # (model_cfg, dataset_name) -> our config
    key_rules: Callable[[Any], Rules]  # our config -> renaming rules for its state-dict keys
    training_only: Callable[[Mapping[str, Any], Any], Shapes]  # (model_cfg, our config) -> OpenGait keys

    def opengait_key(self, config: Any, key: str) -> str:
        for pattern, template in self.key_rules(config):
            if re.fullmatch(pattern, key):
                return re.sub(pattern, template, key)
        raise KeyError(f"{self.architecture}: no OpenGait name for our key {key!r}")


# --- strict reading of model_cfg sections --------------------------------------------------------------


def _section(
    cfg: Mapping[str, Any], where: str, allowed: set[str], required: set[str] | frozenset[str] = frozenset()
) -> dict[str, Any]:
    """`cfg` as a dict, after checking it has no key outside `allowed` and every key in `required`."""
    label = f"model_cfg.{where}" if where else "model_cfg"
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{label}: expected a mapping, got {type(cfg).__name__}")
    unknown, missing = sorted(set(cfg) - allowed), sorted(set(required) - set(cfg))
    if unknown:
        raise ConfigError(f"{label}: unsupported keys {unknown}; supported: {sorted(allowed)}")
    if missing:
        raise ConfigError(f"{label}: missing keys {missing}")
    return dict(cfg)


def _ints(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ConfigError(f"model_cfg.{where}: expected a list of integers, got {value!r}")
    return tuple(value)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f"model_cfg: {message}")


def _bnneck_shapes(prefix: str, parts: int, channels: int, classes: int, bn: bool = True) -> Shapes:
    """SeparateBNNecks: the classifier `fc_bin` [P, C, classes] and (when `bn`) its BatchNorm1d over C*P."""
    shapes: Shapes = {f"{prefix}.fc_bin": (parts, channels, classes)}
    if bn:
        shapes |= {
            f"{prefix}.bn1d.{n}": (channels * parts,)
            for n in ("weight", "bias", "running_mean", "running_var")
        }
        shapes[f"{prefix}.bn1d.num_batches_tracked"] = ()
    return shapes


BNNECK_KEYS = {"class_num", "in_channels", "parts_num", "norm", "parallel_BN1d"}


def _bnneck(cfg: Mapping[str, Any], where: str, parts: int, channels: int) -> dict[str, Any]:
    """A SeparateBNNecks section checked against the features it receives (P parts of C channels)."""
    section = _section(cfg, where, BNNECK_KEYS, {"class_num"})
    _require(section.get("parts_num", parts) == parts, f"{where}.parts_num must be {parts}")
    _require(section.get("in_channels", channels) == channels, f"{where}.in_channels must be {channels}")
    _require(section.get("parallel_BN1d", True) is True, f"{where}.parallel_BN1d: false is not supported")
    return section


# --- GaitBase (OpenGait `Baseline`) ---------------------------------------------------------------------

RESNET9_KEYS = {"type", "block", "channels", "layers", "strides", "maxpool", "in_channel"}


def _resnet9(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """backbone_cfg of a ResNet9 with OpenGait's ResNet9 defaults filled in."""
    section = _section(cfg, "backbone_cfg", RESNET9_KEYS, {"type", "block"})
    _require(
        section["type"] == "ResNet9",
        f"backbone_cfg.type {section['type']!r} is not supported; supported: ResNet9",
    )
    _require(
        section["block"] == "BasicBlock",
        f"backbone_cfg.block {section['block']!r} is not supported; supported: BasicBlock",
    )
    _require(section.get("in_channel", 1) == 1, "backbone_cfg.in_channel must be 1 (silhouettes)")
    return {
        "channels": _ints(section.get("channels", [32, 64, 128, 256]), "backbone_cfg.channels"),
        "layers": _ints(section.get("layers", [1, 2, 2, 1]), "backbone_cfg.layers"),
        "strides": _ints(section.get("strides", [1, 2, 2, 1]), "backbone_cfg.strides"),
        "maxpool": bool(section.get("maxpool", True)),
    }


def _gaitbase_config(cfg: Mapping[str, Any], dataset: str) -> GaitBaseConfig:
    _section(
        cfg,
        "",
        {"model", "backbone_cfg", "SeparateFCs", "SeparateBNNecks", "bin_num"},
        {"backbone_cfg", "SeparateFCs", "bin_num"},
    )
    backbone = _resnet9(cfg["backbone_cfg"])
    fcs = _section(
        cfg["SeparateFCs"],
        "SeparateFCs",
        {"in_channels", "out_channels", "parts_num", "norm"},
        {"in_channels", "out_channels", "parts_num"},
    )
    config = GaitBaseConfig(
        **backbone,
        bins=_ints(cfg["bin_num"], "bin_num"),
        fc_dim=fcs["out_channels"],
        fc_norm=bool(fcs.get("norm", False)),
    )
    _require(
        fcs["in_channels"] == config.channels[-1],
        f"SeparateFCs.in_channels must be {config.channels[-1]} (backbone width)",
    )
    _require(
        fcs["parts_num"] == config.parts, f"SeparateFCs.parts_num must be {config.parts} (sum of bin_num)"
    )
    return config


def _gaitbase_training_only(cfg: Mapping[str, Any], config: GaitBaseConfig) -> Shapes:
    if "SeparateBNNecks" not in cfg:
        return {}
    bnneck = _bnneck(cfg["SeparateBNNecks"], "SeparateBNNecks", config.parts, config.layout.part_dim)
    return _bnneck_shapes("BNNecks", config.parts, config.layout.part_dim, bnneck["class_num"])


GAITBASE_RULES: Rules = (
    (r"backbone\.conv1\.weight", r"Backbone.forward_block.conv1.conv.weight"),
    (r"backbone\.(.+)", r"Backbone.forward_block.\1"),
    (r"fcs\.weight", r"FCs.fc_bin"),
)

# --- DeepGaitV2 -----------------------------------------------------------------------------------------


def _deepgaitv2_config(cfg: Mapping[str, Any], dataset: str) -> DeepGaitV2Config:
    _section(cfg, "", {"model", "Backbone", "SeparateBNNecks", "use_emb2"}, {"Backbone", "SeparateBNNecks"})
    backbone = _section(
        cfg["Backbone"],
        "Backbone",
        {"in_channels", "mode", "layers", "channels"},
        {"mode", "layers", "channels"},
    )
    _require(backbone.get("in_channels", 1) == 1, "Backbone.in_channels must be 1 (silhouettes)")
    _require(
        backbone["mode"] in ("2d", "p3d"),
        f"Backbone.mode {backbone['mode']!r} is not supported; supported: 2d, p3d",
    )
    return DeepGaitV2Config(
        mode=backbone["mode"],
        channels=_ints(backbone["channels"], "Backbone.channels"),
        layers=_ints(backbone["layers"], "Backbone.layers"),
        use_emb2=bool(cfg.get("use_emb2", False)),
    )


def _deepgaitv2_training_only(cfg: Mapping[str, Any], config: DeepGaitV2Config) -> Shapes:
    section = _section(cfg["SeparateBNNecks"], "SeparateBNNecks", {"class_num"}, {"class_num"})
    # With use_emb2 the BNNeck's BatchNorm makes the embedding (our `bnneck`); only its classifier is unused.
    return _bnneck_shapes(
        "BNNecks", DEEPGAITV2_PARTS, config.layout.part_dim, section["class_num"], bn=not config.use_emb2
    )


def _deepgaitv2_rules(config: DeepGaitV2Config) -> Rules:
    stages = (
        ((r"layer([234])\.(.+)", r"layer\1.forward_block.\2"),)
        if config.mode == "2d"
        else (
            (r"layer([234])\.(\d+)\.conv([12])\.(\d)\.(.+)", r"layer\1.\2.conv\3.forward_block.\4.\5"),
            (r"layer([234])\.(\d+)\.temporal\.0\.(.+)", r"layer\1.\2.shortcut3d.\3"),
            (r"layer([234])\.(\d+)\.temporal\.1\.(.+)", r"layer\1.\2.sbn.\3"),
            (r"layer([234])\.(\d+)\.downsample\.(.+)", r"layer\1.\2.downsample.\3"),
        )
    )
    return (
        (r"stem\.(\d)\.(.+)", r"layer0.forward_block.\1.\2"),
        (r"layer1\.(.+)", r"layer1.forward_block.\1"),
        *stages,
        (r"fcs\.weight", r"FCs.fc_bin"),
        (r"bnneck\.bn\.(.+)", r"BNNecks.bn1d.\1"),
    )


# --- GaitSet --------------------------------------------------------------------------------------------


def _gaitset_config(cfg: Mapping[str, Any], dataset: str) -> GaitSetConfig:
    _section(
        cfg, "", {"model", "in_channels", "SeparateFCs", "bin_num"}, {"in_channels", "SeparateFCs", "bin_num"}
    )
    widths = _ints(cfg["in_channels"], "in_channels")
    _require(
        len(widths) == 4 and widths[0] == 1,
        f"in_channels must be [1, c1, c2, c3] (silhouettes first), got {list(widths)}",
    )
    fcs = _section(
        cfg["SeparateFCs"],
        "SeparateFCs",
        {"in_channels", "out_channels", "parts_num"},
        {"in_channels", "out_channels", "parts_num"},
    )
    config = GaitSetConfig(
        channels=widths[1:], bins=_ints(cfg["bin_num"], "bin_num"), fc_dim=fcs["out_channels"]
    )
    _require(
        fcs["in_channels"] == config.channels[-1], f"SeparateFCs.in_channels must be {config.channels[-1]}"
    )
    _require(
        fcs["parts_num"] == config.parts, f"SeparateFCs.parts_num must be {config.parts} (2 x sum of bin_num)"
    )
    return config


GAITSET_RULES: Rules = (
    (r"(set_block\d)\.(\d)\.weight", r"\1.forward_block.\2.conv.weight"),
    (r"(gl_block\d)\.(\d)\.weight", r"\1.\2.conv.weight"),
    (r"head\.weight", r"Head.fc_bin"),
)

# --- GaitGL ---------------------------------------------------------------------------------------------

GAITGL_LARGE_DATASETS = ("OUMVLP", "GREW")  # OpenGait builds its deeper branch for these dataset names


def _gaitgl_config(cfg: Mapping[str, Any], dataset: str) -> GaitGLConfig:
    _section(cfg, "", {"model", "channels", "class_num", "SeparateBNNecks"}, {"channels", "class_num"})
    branch: GaitGLBranch = "oumvlp-grew" if dataset in GAITGL_LARGE_DATASETS else "casia-b"
    channels = _ints(cfg["channels"], "channels")
    if "SeparateBNNecks" not in cfg:
        return GaitGLConfig(channels=channels, branch=branch, head="bn")
    bnneck = _bnneck(cfg["SeparateBNNecks"], "SeparateBNNecks", GAITGL_PARTS, channels[-1])
    return GaitGLConfig(
        channels=channels, branch=branch, head="bnneck", bnneck_norm=bool(bnneck.get("norm", True))
    )


def _gaitgl_training_only(cfg: Mapping[str, Any], config: GaitGLConfig) -> Shapes:
    if config.head == "bn":
        return {"Head1.fc_bin": (GAITGL_PARTS, config.layout.part_dim, cfg["class_num"])}
    return _bnneck_shapes(
        "BNNecks", GAITGL_PARTS, config.layout.part_dim, cfg["SeparateBNNecks"]["class_num"], bn=False
    )


GAITGL_RULES: Rules = (
    (r"conv3d\.(\d)\.weight", r"conv3d.\1.conv3d.weight"),
    (r"lta\.0\.weight", r"LTA.0.conv3d.weight"),
    *(
        (rf"gl_{ours}\.((?:\d\.)?)(global|local)_conv\.weight", rf"GLConv{theirs}.\1\2_conv3d.conv3d.weight")
        for ours, theirs in (("a0", "A0"), ("a1", "A1"), ("b2", "B2"))
    ),
    (r"gem\.p", r"HPP.p"),
    (r"head0\.weight", r"Head0.fc_bin"),
    (r"bn\.(.+)", r"Bn.\1"),
    (r"bnneck\.bn\.(.+)", r"BNNecks.bn1d.\1"),
)

# --- GaitSSB (OpenGait `GaitSSB_Pretrain` / `GaitSSB_Finetune`) -----------------------------------------

GAITSSB_PARTS = 31  # bins 16/8/4/2/1, fixed in OpenGait's GaitSSB
GAITSSB_TRAINING_KEYS = {"backbone_lr", "projector_lr"}  # optimiser settings, not architecture


def _gaitssb_config(form: str) -> Callable[[Mapping[str, Any], str], ModelConfig]:
    def read(cfg: Mapping[str, Any], dataset: str) -> ModelConfig:
        _section(
            cfg,
            "",
            {"model", "backbone_cfg", "parts_num", *GAITSSB_TRAINING_KEYS},
            {"backbone_cfg", "parts_num"},
        )
        backbone = _resnet9(cfg["backbone_cfg"])
        _require(backbone["layers"] == (1, 1, 1, 1), "GaitSSB backbone_cfg.layers must be [1, 1, 1, 1]")
        _require(not backbone["maxpool"], "GaitSSB backbone_cfg.maxpool must be false")
        _require(cfg["parts_num"] == GAITSSB_PARTS, f"GaitSSB parts_num must be {GAITSSB_PARTS}")
        return ModelConfig(channels=backbone["channels"], strides=backbone["strides"], form=form)  # type: ignore[arg-type]

    return read


GAITSSB_RULES: Rules = (
    (r"backbone\.conv1\.weight", r"Backbone.forward_block.conv1.conv.weight"),
    (r"backbone\.bn1\.(.+)", r"Backbone.forward_block.bn1.\1"),
    *((rf"backbone\.layers\.{i}\.(.+)", rf"Backbone.forward_block.layer{i + 1}.0.\1") for i in range(4)),
    (r"(projector|predictor)\.(\d)\.weight", r"\1.\2.fc_bin"),
    (r"(projector|predictor)\.(\d)\.bn\.(.+)", r"\1.\2.bn1d.\3"),
    (r"head\.weight", r"head0.fc_bin"),
)


def _no_training_only(cfg: Mapping[str, Any], config: Any) -> Shapes:
    return {}


def _fixed(rules: Rules) -> Callable[[Any], Rules]:
    return lambda config: rules


GAITSSB_PRETRAIN = OpenGaitModel(
    "gaitssb", _gaitssb_config("pretrain"), _fixed(GAITSSB_RULES), _no_training_only
)
GAITSSB_FINETUNE = OpenGaitModel(
    "gaitssb", _gaitssb_config("finetune"), _fixed(GAITSSB_RULES), _no_training_only
)

OPENGAIT_MODELS: dict[str, OpenGaitModel] = {
    "Baseline": OpenGaitModel("gaitbase", _gaitbase_config, _fixed(GAITBASE_RULES), _gaitbase_training_only),
    "DeepGaitV2": OpenGaitModel(
        "deepgaitv2", _deepgaitv2_config, _deepgaitv2_rules, _deepgaitv2_training_only
    ),
    "GaitSet": OpenGaitModel("gaitset", _gaitset_config, _fixed(GAITSET_RULES), _no_training_only),
    "GaitGL": OpenGaitModel("gaitgl", _gaitgl_config, _fixed(GAITGL_RULES), _gaitgl_training_only),
    "GaitSSB_Pretrain": GAITSSB_PRETRAIN,
    "GaitSSB_Finetune": GAITSSB_FINETUNE,
}


def opengait_model(name: Any) -> OpenGaitModel:
    """The mapping for OpenGait model class `name`; ConfigError listing the supported ones otherwise."""
    if not isinstance(name, str) or name not in OPENGAIT_MODELS:
        raise ConfigError(
            f"OpenGait model {name!r} is not supported; supported: {', '.join(OPENGAIT_MODELS)}"
        )
    return OPENGAIT_MODELS[name]

"""GaitBase (OpenGait's `Baseline`): frame-wise ResNet9, set pooling, horizontal pyramid, separate FCs.

The embedding is what OpenGait's evaluator compares: the separate FCs' output, taken before the BNNeck
(OpenGait's `inference_feat['embeddings']`). The BNNeck and its classifier feed only the training
losses, so they are not part of this network (the importer checks and drops their weights).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from gaitlu.embedding import EmbeddingLayout
from gaitlu.errors import ConfigError
from train.config import ConfigModel, Ints
from train.network import GaitNetwork
from train.zoo.parts import SeparateFC, frames_of, pyramid_pool, resnet_stage, set_pool


class GaitBaseConfig(ConfigModel):
    """Architecture arguments (OpenGait's `backbone_cfg`, `SeparateFCs` and `bin_num`)."""

    channels: Ints = (64, 128, 256, 512)  # ResNet9 stage widths
    layers: Ints = (1, 1, 1, 1)  # basic blocks per stage
    strides: Ints = (1, 2, 2, 1)  # 64x44 -> 16x11 feature maps
    maxpool: bool = False  # the torchvision 3x3/2 max-pool after the stem
    bins: Ints = (16,)  # horizontal pyramid: one part per strip
    fc_dim: int = 256  # SeparateFCs.out_channels: channels per part of the embedding
    fc_norm: bool = False  # SeparateFCs.norm: weights L2-normalised over their input dimension

    def model_post_init(self, context: Any, /) -> None:
        if not (len(self.channels) == len(self.layers) == len(self.strides) == 4):
            raise ConfigError("GaitBase needs 4 stages: channels, layers and strides of 4 values each")
        if min(self.channels) < 1 or min(self.layers) < 1 or any(s not in (1, 2) for s in self.strides):
            raise ConfigError(
                f"invalid GaitBase stages: channels {self.channels}, layers {self.layers}, "
                f"strides {self.strides}"
            )
        if not self.bins or min(self.bins) < 1 or self.fc_dim < 1:
            raise ConfigError(f"invalid GaitBase head: bins {self.bins}, fc_dim {self.fc_dim}")

    @property
    def parts(self) -> int:
        return sum(self.bins)

    @property
    def layout(self) -> EmbeddingLayout:
        """The embedding: parts x channels, and whether the network normalises each part."""
        return EmbeddingLayout(self.parts, self.fc_dim, "none")


class ResNet9(nn.Module):
    """OpenGait's ResNet9: stem conv3x3 + BN + ReLU (+ optional max-pool), four stages of basic blocks."""

    def __init__(self, config: GaitBaseConfig) -> None:
        super().__init__()
        c = config.channels
        self.conv1 = nn.Conv2d(1, c[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1) if config.maxpool else nn.Identity()
        widths = (c[0], *c)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            resnet_stage(widths[i], widths[i + 1], config.layers[i], config.strides[i]) for i in range(4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))  # (N*T, C0, H, W)
        maps: torch.Tensor = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N*T, C3, H/4, W/4)
        return maps


class GaitBase(GaitNetwork[GaitBaseConfig]):
    """(N, T, 64, 44) float silhouettes -> (N, P, C) embedding, raw (not normalised)."""

    min_frames: ClassVar[int] = 1

    def __init__(self, config: GaitBaseConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = ResNet9(config)
        self.fcs = SeparateFC(config.parts, config.channels[-1], config.fc_dim, config.fc_norm)

    def forward(self, sils: torch.Tensor) -> torch.Tensor:
        n = sils.shape[0]
        maps = set_pool(self.backbone(frames_of(sils)), n)  # (N*T, C, h, w) -> (N, C, h, w)
        emb: torch.Tensor = self.fcs(pyramid_pool(maps, self.config.bins))  # (N, C, P) -> (N, C', P)
        return emb.transpose(1, 2)  # (N, P, C')

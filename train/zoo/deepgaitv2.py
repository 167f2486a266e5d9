"""DeepGaitV2 (OpenGait's `DeepGaitV2`), in its 2D and pseudo-3D (P3D) forms.

Stem and stage 1 run frame by frame; stages 2-4 are frame-wise ResNet blocks (2D) or P3D blocks, whose
(3, 1, 1) convolution mixes each frame with its two neighbours. Then set pooling, a 16-strip pyramid and
separate FCs. The embedding is the FCs' output, before the BNNeck (OpenGait's default); with
`use_emb2` OpenGait returns the BNNeck feature instead (BatchNorm, then each part L2-normalised), and
so does this network.

P3D sees time: a sequence must be embedded whole, alone on its batch row (batching sequences of equal
length along the batch axis is exact; padding or packing them along time is not).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from gaitlu.embedding import EmbeddingLayout
from gaitlu.errors import ConfigError
from train.config import ConfigModel, Ints
from train.network import GaitNetwork
from train.zoo.parts import (
    PartBatchNorm,
    SeparateFC,
    frames_of,
    normalise_parts,
    on_frames,
    pyramid_pool,
    resnet_stage,
    set_pool,
    to_volume,
)

PARTS = 16  # DeepGaitV2's pyramid is one level of 16 strips
STRIDES = (1, 2, 2, 1)


class DeepGaitV2Config(ConfigModel):
    """Architecture arguments (OpenGait's `Backbone` and `use_emb2`)."""

    mode: Literal["2d", "p3d"] = "p3d"
    channels: Ints = (64, 128, 256, 512)
    layers: Ints = (1, 4, 4, 1)  # blocks per stage
    use_emb2: bool = False  # embed with the BNNeck feature instead of the FCs output

    def model_post_init(self, context: Any, /) -> None:
        if self.mode not in ("2d", "p3d"):
            raise ConfigError(f"DeepGaitV2 mode must be '2d' or 'p3d', not {self.mode!r}")
        if len(self.channels) != 4 or len(self.layers) != 4:
            raise ConfigError("DeepGaitV2 needs 4 stages: channels and layers of 4 values each")
        if min(self.channels) < 1 or min(self.layers) < 1:
            raise ConfigError(f"invalid DeepGaitV2 stages: channels {self.channels}, layers {self.layers}")

    @property
    def parts(self) -> int:
        return PARTS

    @property
    def layout(self) -> EmbeddingLayout:
        """The embedding: parts x channels, and whether the network normalises each part."""
        # FCs map channels[3] -> channels[2]; the BNNeck feature (use_emb2) is normalised per part
        return EmbeddingLayout(PARTS, self.channels[2], "per-part-l2" if self.use_emb2 else "none")


class P3DBlock(nn.Module):
    """Frame-wise conv3x3 + BN + ReLU, a (3, 1, 1) temporal conv + BN added back, frame-wise conv3x3 + BN,
    then the residual (identity, or a (1, 1, 1) Conv3d with the spatial stride + BN3d)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.temporal = nn.Sequential(
            nn.Conv3d(out_ch, out_ch, (3, 1, 1), 1, (1, 0, 0), bias=False), nn.BatchNorm3d(out_ch)
        )
        self.conv2 = nn.Sequential(nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_ch, out_ch, 1, (1, stride, stride), bias=False), nn.BatchNorm3d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, H, W) -> (N, C', T, H', W')."""
        out = F.relu(on_frames(self.conv1, x))
        out = F.relu(out + self.temporal(out))  # each frame sees its two neighbours (zero beyond the ends)
        out = on_frames(self.conv2, out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def p3d_stage(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        P3DBlock(in_ch, out_ch, stride), *(P3DBlock(out_ch, out_ch, 1) for _ in range(blocks - 1))
    )


class DeepGaitV2(GaitNetwork[DeepGaitV2Config]):
    """(N, T, 64, 44) float silhouettes -> (N, 16, channels[2]) embedding."""

    min_frames: ClassVar[int] = 1

    def __init__(self, config: DeepGaitV2Config) -> None:
        super().__init__()
        self.config = config
        c, layers = config.channels, config.layers
        self.stem = nn.Sequential(nn.Conv2d(1, c[0], 3, 1, 1, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU())
        self.layer1 = resnet_stage(c[0], c[0], layers[0], STRIDES[0])
        stage = resnet_stage if config.mode == "2d" else p3d_stage
        self.layer2, self.layer3, self.layer4 = (
            stage(c[i - 1], c[i], layers[i], STRIDES[i]) for i in range(1, 4)
        )
        self.fcs = SeparateFC(PARTS, c[3], c[2])
        self.bnneck = PartBatchNorm(PARTS, c[2]) if config.use_emb2 else None

    def forward(self, sils: torch.Tensor) -> torch.Tensor:
        n = sils.shape[0]
        x = self.layer1(self.stem(frames_of(sils)))  # (N*T, C0, 64, 44)
        if self.config.mode == "2d":
            maps = set_pool(
                self.layer4(self.layer3(self.layer2(x))), n
            )  # (N*T, C3, 16, 11) -> (N, C3, 16, 11)
        else:
            volume = self.layer4(self.layer3(self.layer2(to_volume(x, n))))  # (N, C3, T, 16, 11)
            maps = volume.amax(dim=2)  # set pooling over time: (N, C3, 16, 11)
        emb: torch.Tensor = self.fcs(pyramid_pool(maps, (PARTS,)))  # (N, C3, 16) -> (N, C2, 16)
        if self.bnneck is not None:
            emb = normalise_parts(self.bnneck(emb))  # OpenGait's BNNeck feature
        return emb.transpose(1, 2)  # (N, 16, C2)

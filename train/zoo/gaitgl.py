"""GaitGL (OpenGait's `GaitGL`): global and local 3-D convolutions with local temporal aggregation.

Everything runs on (N, C, T, H, W) volumes: a 3x3x3 conv, local temporal aggregation (a (3, 1, 1)
conv with stride 3: one frame per three), then GL convs (a global conv of the whole map plus a local
conv run on each horizontal strip on its own), set pooling, GeM pooling of 64 rows with a learned
exponent, separate FCs (`head0`) and a head:

- `bn` (OpenGait's `Bn_head`, configs without `SeparateBNNecks`, e.g. CASIA-B): BatchNorm1d over the
  channels; its output is the embedding.
- `bnneck` (configs with `SeparateBNNecks`): OpenGait returns the BNNeck feature (BatchNorm over C x P,
  then each part L2-normalised unless its `norm` is false).

OpenGait picks the deeper `oumvlp-grew` branch (two convs per stage, a fourth width, strips of half the
height) when the dataset is OU-MVLP or GREW and the `casia-b` branch otherwise. Sequences shorter than
3 frames are tiled whole (1 frame x 3, 2 frames x 2) first, as OpenGait does. The convolutions mix
frames, so a sequence must be embedded whole and alone on its batch row.
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
from train.zoo.parts import GeMPool, PartBatchNorm, SeparateFC, normalise_parts

PARTS = 64  # GeM pooling keeps every row of the 64-row map
MIN_FRAMES = 3  # the stride-3 temporal aggregation needs three frames
GaitGLBranch = Literal["casia-b", "oumvlp-grew"]  # OpenGait builds the deeper one for OU-MVLP and GREW


class GaitGLConfig(ConfigModel):
    """Architecture arguments (OpenGait's `channels`, the dataset-chosen branch and the head)."""

    channels: Ints = (32, 64, 128)  # 3 widths (casia-b) or 4 (oumvlp-grew)
    branch: GaitGLBranch = "casia-b"
    head: Literal["bn", "bnneck"] = "bn"
    bnneck_norm: bool = True  # bnneck head: L2-normalise each part of the BNNeck feature

    def model_post_init(self, context: Any, /) -> None:
        widths = {"casia-b": 3, "oumvlp-grew": 4}.get(self.branch)
        if widths is None:
            raise ConfigError(f"GaitGL branch must be 'casia-b' or 'oumvlp-grew', not {self.branch!r}")
        if len(self.channels) != widths or min(self.channels) < 1:
            raise ConfigError(
                f"GaitGL's {self.branch} branch needs {widths} positive widths, got {self.channels}"
            )
        if self.head not in ("bn", "bnneck"):
            raise ConfigError(f"GaitGL head must be 'bn' or 'bnneck', not {self.head!r}")

    @property
    def parts(self) -> int:
        return PARTS

    @property
    def layout(self) -> EmbeddingLayout:
        """The embedding: parts x channels, and whether the network normalises each part."""
        normalised = self.head == "bnneck" and self.bnneck_norm
        return EmbeddingLayout(PARTS, self.channels[-1], "per-part-l2" if normalised else "none")


def conv3d(in_ch: int, out_ch: int) -> nn.Conv3d:
    return nn.Conv3d(in_ch, out_ch, 3, 1, 1, bias=False)


class GLConv(nn.Module):
    """A global 3x3x3 conv of the whole map and a local one run on each of `strips` horizontal strips
    on its own (zero padding at the strip borders); LeakyReLU of both, summed or (`concat`) stacked
    along the height."""

    def __init__(self, in_ch: int, out_ch: int, strips: int, concat: bool) -> None:
        super().__init__()
        self.global_conv = conv3d(in_ch, out_ch)
        self.local_conv = conv3d(in_ch, out_ch)
        self.strips = strips
        self.concat = concat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = x.shape
        s = self.strips
        whole = self.global_conv(x)  # (N, C', T, H, W)
        strips = x.reshape(n, c, t, s, h // s, w).permute(0, 3, 1, 2, 4, 5)  # (N, s, C, T, H/s, W)
        local = self.local_conv(strips.reshape(n * s, c, t, h // s, w))  # strips as batch rows
        local = local.reshape(n, s, -1, t, h // s, w).permute(0, 2, 3, 1, 4, 5)  # (N, C', T, s, H/s, W)
        local = local.reshape(n, -1, t, h, w)  # (N, C', T, H, W)
        if self.concat:
            return F.leaky_relu(torch.cat([whole, local], dim=3))  # (N, C', T, 2H, W)
        return F.leaky_relu(whole) + F.leaky_relu(local)


class GaitGL(GaitNetwork[GaitGLConfig]):
    """(N, T, 64, 44) float silhouettes -> (N, 64, channels[-1]) embedding."""

    min_frames: ClassVar[int] = MIN_FRAMES

    def __init__(self, config: GaitGLConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        if config.branch == "casia-b":
            self.conv3d = nn.Sequential(conv3d(1, c[0]), nn.LeakyReLU())
            self.gl_a0: nn.Module = GLConv(c[0], c[1], strips=8, concat=False)
            self.gl_a1: nn.Module = GLConv(c[1], c[2], strips=8, concat=False)
            self.gl_b2: nn.Module = GLConv(c[2], c[2], strips=8, concat=True)
        else:
            self.conv3d = nn.Sequential(conv3d(1, c[0]), nn.LeakyReLU(), conv3d(c[0], c[0]), nn.LeakyReLU())
            self.gl_a0 = nn.Sequential(GLConv(c[0], c[1], 2, False), GLConv(c[1], c[1], 2, False))
            self.gl_a1 = nn.Sequential(GLConv(c[1], c[2], 2, False), GLConv(c[2], c[2], 2, False))
            self.gl_b2 = nn.Sequential(GLConv(c[2], c[3], 2, False), GLConv(c[3], c[3], 2, True))
        self.lta = nn.Sequential(nn.Conv3d(c[0], c[0], (3, 1, 1), (3, 1, 1), bias=False), nn.LeakyReLU())
        self.gem = GeMPool(PARTS)
        self.head0 = SeparateFC(PARTS, c[-1], c[-1])
        self.bn = nn.BatchNorm1d(c[-1]) if config.head == "bn" else None
        self.bnneck = PartBatchNorm(PARTS, c[-1]) if config.head == "bnneck" else None

    def forward(self, sils: torch.Tensor) -> torch.Tensor:
        if sils.dim() != 4:
            raise ValueError(f"expected silhouettes (N, T, H, W), got shape {tuple(sils.shape)}")
        t = sils.shape[1]
        if t < MIN_FRAMES:
            sils = sils.repeat(1, 3 if t == 1 else 2, 1, 1)  # OpenGait's rule: the whole sequence, tiled
        x = self.lta(self.conv3d(sils.unsqueeze(1)))  # (N, C0, T // 3, 64, 44)
        x = F.max_pool3d(self.gl_a0(x), (1, 2, 2))  # (N, C1, T', 32, 22)
        x = self.gl_b2(self.gl_a1(x))  # (N, C, T', 64, 22): the last GL conv stacks global over local
        emb: torch.Tensor = self.head0(self.gem(x.amax(dim=2)))  # set pooling, then (N, C, 64)
        if self.bn is not None:
            emb = self.bn(emb)
        elif self.bnneck is not None:
            emb = self.bnneck(emb)
            emb = normalise_parts(emb) if self.config.bnneck_norm else emb
        return emb.transpose(1, 2)  # (N, 64, C)

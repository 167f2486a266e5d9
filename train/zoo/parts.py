"""Pieces the zoo architectures share: frame layouts, set pooling, pyramid pooling, GeM, ResNet stages.

Silhouettes enter every network as (N, T, 64, 44). Frame-wise layers run on (N*T, C, H, W) ("frames");
layers that convolve over time run on (N, C, T, H, W) ("volumes"). A volume layer mixes neighbouring
frames of one sequence, so such a network must see each sequence whole and alone on its batch row:
never padded, never packed with another sequence along time.

Separate FCs, the channel-major part BatchNorm, mean + max pyramid pooling and the ResNet basic block
are GaitSSB's (train/model.py) and reused as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gaitlu.errors import ConfigError
from train.model import BasicBlock, PartBatchNorm, SeparateFC, pyramid_pool

__all__ = [
    "BasicBlock",
    "GeMPool",
    "PartBatchNorm",
    "SeparateFC",
    "frames_of",
    "normalise_parts",
    "on_frames",
    "pyramid_pool",
    "resnet_stage",
    "set_pool",
    "to_volume",
]


def frames_of(sils: torch.Tensor) -> torch.Tensor:
    """(N, T, H, W) silhouettes -> (N*T, 1, H, W) frames; the input contract is checked here."""
    if sils.dim() != 4:
        raise ValueError(f"expected silhouettes (N, T, H, W), got shape {tuple(sils.shape)}")
    n, t, h, w = sils.shape
    return sils.reshape(n * t, 1, h, w)


def set_pool(frames: torch.Tensor, n: int) -> torch.Tensor:
    """Set pooling: max over each sequence's frames, (N*T, C, H, W) -> (N, C, H, W)."""
    return frames.reshape(n, -1, *frames.shape[1:]).amax(dim=1)  # (N, T, C, H, W) -> (N, C, H, W)


def to_volume(frames: torch.Tensor, n: int) -> torch.Tensor:
    """(N*T, C, H, W) frames of `n` sequences -> (N, C, T, H, W) volume."""
    return frames.reshape(n, -1, *frames.shape[1:]).transpose(1, 2)


def on_frames(layer: nn.Module, volume: torch.Tensor) -> torch.Tensor:
    """Apply a frame-wise (2-D) layer to every frame of a (N, C, T, H, W) volume."""
    n, c, t, h, w = volume.shape
    out: torch.Tensor = layer(volume.transpose(1, 2).reshape(n * t, c, h, w))  # (N*T, C', H', W')
    return out.reshape(n, t, *out.shape[1:]).transpose(1, 2)  # (N, C', T, H', W')


class GeMPool(nn.Module):
    """Horizontal generalised-mean pooling with a learned exponent: (N, C, H, W) -> (N, C, bins).

    Each of `bins` horizontal strips becomes (mean over the strip of clamp(x, eps)^p)^(1/p).
    """

    def __init__(self, bins: int, p: float = 6.5, eps: float = 1e-6) -> None:
        super().__init__()
        self.bins = bins
        self.p = nn.Parameter(torch.full((1,), p))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        strips = x.reshape(n, c, self.bins, -1)  # (N, C, bins, H/bins * W)
        return strips.clamp(min=self.eps).pow(self.p).mean(-1).pow(1.0 / self.p)  # (N, C, bins)


def resnet_stage(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    """`blocks` basic blocks; the first changes width and stride (with a 1x1 shortcut when it must)."""
    if blocks < 1:
        raise ConfigError(f"a ResNet stage needs at least one block, got {blocks}")
    return nn.Sequential(
        BasicBlock(in_ch, out_ch, stride), *(BasicBlock(out_ch, out_ch, 1) for _ in range(blocks - 1))
    )


def normalise_parts(emb: torch.Tensor) -> torch.Tensor:
    """L2-normalise each part of (N, C, P) features over its channels."""
    return F.normalize(emb, dim=1)

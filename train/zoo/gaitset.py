"""GaitSet (OpenGait's `GaitSet`): a gait sequence as an unordered set of frames.

Three frame-wise conv blocks; after each, set pooling (max over frames) feeds a global branch of its own
conv blocks; both branches end in the horizontal pyramid (16 + 8 + 4 + 2 + 1 strips each, 62 parts),
then separate FCs. The embedding is the FCs' output (OpenGait's `inference_feat['embeddings']`).
Frames are independent until set pooling, so the result does not depend on their order.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from gaitlu.embedding import EmbeddingLayout
from gaitlu.errors import ConfigError
from train.config import ConfigModel, Ints
from train.network import GaitNetwork
from train.zoo.parts import SeparateFC, frames_of, pyramid_pool, set_pool


class GaitSetConfig(ConfigModel):
    """Architecture arguments (OpenGait's `in_channels`, `SeparateFCs.out_channels`, `bin_num`)."""

    channels: Ints = (32, 64, 128)  # widths of the three blocks (OpenGait lists the input 1 first)
    bins: Ints = (16, 8, 4, 2, 1)
    fc_dim: int = 256  # channels per part of the embedding

    def model_post_init(self, context: Any, /) -> None:
        if len(self.channels) != 3 or min(self.channels) < 1:
            raise ConfigError(f"GaitSet needs 3 positive block widths, got {self.channels}")
        if not self.bins or min(self.bins) < 1 or self.fc_dim < 1:
            raise ConfigError(f"invalid GaitSet head: bins {self.bins}, fc_dim {self.fc_dim}")

    @property
    def parts(self) -> int:
        return 2 * sum(self.bins)  # the set branch's pyramid, then the global branch's

    @property
    def layout(self) -> EmbeddingLayout:
        """The embedding: parts x channels, and whether the network normalises each part."""
        return EmbeddingLayout(self.parts, self.fc_dim, "none")


def conv_block(in_ch: int, out_ch: int, first_kernel: int, pool: bool) -> nn.Sequential:
    """conv + LeakyReLU, conv3x3 + LeakyReLU, optionally a 2x2 max-pool (indices 0 and 2 hold weights)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, first_kernel, 1, first_kernel // 2, bias=False),
        nn.LeakyReLU(),
        nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False),
        nn.LeakyReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


class GaitSet(GaitNetwork[GaitSetConfig]):
    """(N, T, 64, 44) float silhouettes -> (N, 62, fc_dim) embedding, raw (not normalised)."""

    min_frames: ClassVar[int] = 1

    def __init__(self, config: GaitSetConfig) -> None:
        super().__init__()
        self.config = config
        c1, c2, c3 = config.channels
        self.set_block1 = conv_block(1, c1, 5, pool=True)
        self.set_block2 = conv_block(c1, c2, 3, pool=True)
        self.set_block3 = conv_block(c2, c3, 3, pool=False)
        self.gl_block2 = conv_block(c1, c2, 3, pool=True)
        self.gl_block3 = conv_block(c2, c3, 3, pool=False)
        self.head = SeparateFC(config.parts, c3, config.fc_dim)

    def forward(self, sils: torch.Tensor) -> torch.Tensor:
        n = sils.shape[0]
        x = self.set_block1(frames_of(sils))  # (N*T, C1, 32, 22)
        gl = self.gl_block2(set_pool(x, n))  # (N, C2, 16, 11)
        x = self.set_block2(x)  # (N*T, C2, 16, 11)
        gl = self.gl_block3(gl + set_pool(x, n))  # (N, C3, 16, 11)
        x = set_pool(self.set_block3(x), n)  # (N, C3, 16, 11)
        gl = gl + x
        feat = torch.cat([pyramid_pool(x, self.config.bins), pyramid_pool(gl, self.config.bins)], -1)
        emb: torch.Tensor = self.head(feat)  # (N, C3, 62) -> (N, fc_dim, 62)
        return emb.transpose(1, 2)  # (N, 62, fc_dim)

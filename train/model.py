"""The GaitSSB network: frame-wise ResNet9, temporal max, 31-part pyramid pooling, per-part heads.

Follows OpenGait's GaitSSB (configs/gaitssb) so its checkpoints map one to one (see train/opengait.py),
but the forward is pure: silhouettes in, the embedding OpenGait's evaluator uses out, so it exports to
ONNX without a wrapper. That is the per-part L2-normalised predictor output for the pretrained form and
the raw `head0` output for the fine-tuned one (normalising it is a separate, recorded serving step).
Training-only pieces (projector/predictor outputs for the loss) are separate methods.
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

Form = Literal["pretrain", "finetune"]


class ModelConfig(ConfigModel):
    """Architecture arguments; saved whole in every checkpoint and artifact manifest."""

    channels: Ints = (64, 128, 256, 512)  # stage widths of the frame-wise ResNet9
    strides: Ints = (1, 2, 2, 1)  # 64x44 -> 16x11 feature maps
    bins: Ints = (16, 8, 4, 2, 1)  # horizontal pyramid: 31 parts
    form: Form = "pretrain"  # pretrain: projector + predictor; finetune: projector + head0

    def model_post_init(self, context: Any, /) -> None:
        if len(self.channels) != 4 or len(self.strides) != 4:
            raise ConfigError("model.channels and model.strides need exactly 4 values (one per stage)")
        if any(c <= 0 for c in self.channels) or any(s not in (1, 2) for s in self.strides):
            raise ConfigError(f"invalid model channels {self.channels} or strides {self.strides}")
        if self.form not in ("pretrain", "finetune"):
            raise ConfigError(f"model.form must be 'pretrain' or 'finetune', not {self.form!r}")

    @property
    def parts(self) -> int:
        return sum(self.bins)

    @property
    def layout(self) -> EmbeddingLayout:
        """The embedding: one part per pyramid bin, the last stage's width per part; the pretrain form
        normalises each part, the finetune form's head output is raw."""
        return EmbeddingLayout(
            self.parts, self.channels[-1], "per-part-l2" if self.form == "pretrain" else "none"
        )


class BasicBlock(nn.Module):
    """The ResNet basic block (two 3x3 convs), with a 1x1 conv + BN shortcut when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + shortcut)


class Backbone(nn.Module):
    """Frame-wise "ResNet9": stem conv3x3 + BN + ReLU (no max-pool), then one BasicBlock per stage."""

    def __init__(self, channels: tuple[int, ...], strides: tuple[int, ...]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        widths = (channels[0], *channels)
        self.layers = nn.Sequential(
            *(BasicBlock(widths[i], widths[i + 1], strides[i]) for i in range(len(channels)))
        )

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps: torch.Tensor = self.layers(self.stem(x))
        return maps


class SeparateFC(nn.Module):
    """One linear map per part, no bias: weight (P, in, out) applied as x_p @ W_p.

    Written as a batched matmul (not einsum) so ONNX runtimes fuse and quantise it.
    """

    def __init__(self, parts: int, in_ch: int, out_ch: int, normalize_weight: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(parts, in_ch, out_ch))
        nn.init.xavier_uniform_(self.weight)
        self.normalize_weight = normalize_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = F.normalize(self.weight, dim=1) if self.normalize_weight else self.weight
        out = x.permute(2, 0, 1).matmul(weight)  # (P, N, out)
        return out.permute(1, 2, 0)  # (N, out, P)


class PartBatchNorm(nn.Module):
    """One BatchNorm1d over all parts' channels, flattened channel-major (index = c * P + p)."""

    def __init__(self, parts: int, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(channels * parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, p = x.shape
        flat: torch.Tensor = self.bn(x.reshape(n, c * p))  # (N, C*P)
        return flat.reshape(n, c, p)


def part_mlp(parts: int, dim: int, final_bn: bool) -> nn.Sequential:
    """FC + BN + ReLU + FC (+ BN): the projector (with the final BN) and the predictor (without)."""
    layers: list[nn.Module] = [
        SeparateFC(parts, dim, dim),
        PartBatchNorm(parts, dim),
        nn.ReLU(),
        SeparateFC(parts, dim, dim),
    ]
    if final_bn:
        layers.append(PartBatchNorm(parts, dim))
    return nn.Sequential(*layers)


def temporal_max(frames: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Max over time of (N, T, C, H, W), ignoring padded frames beyond each sequence's length."""
    if lengths is None:
        return frames.amax(dim=1)
    steps = torch.arange(frames.shape[1], device=frames.device)
    valid = (steps[None, :] < lengths[:, None]).view(*lengths.shape, frames.shape[1], 1, 1, 1)
    return frames.masked_fill(~valid, float("-inf")).amax(dim=1)


def pyramid_pool(x: torch.Tensor, bins: tuple[int, ...]) -> torch.Tensor:
    """Horizontal pyramid pooling of (N, C, H, W): each strip is mean + max -> (N, C, sum(bins))."""
    n, c = x.shape[:2]
    strips = []
    for b in bins:
        z = x.reshape(n, c, b, -1)  # (N, C, b, H/b * W)
        strips.append(z.mean(-1) + z.amax(-1))
    return torch.cat(strips, dim=-1)


class GaitSSB(GaitNetwork[ModelConfig]):
    """GaitSSB. `forward` maps silhouettes to the embedding; training code uses the pieces.

    Input: (N, T, 64, 44) float in [0, 1]; optional `lengths` (N,) for padded batches.
    Output: (N, P, C) float32: pretrain form, each part L2-normalised (as OpenGait's GaitSSB_Pretrain
    embeds); finetune form, the raw head output (as OpenGait's GaitSSB_Finetune embeds).
    """

    min_frames: ClassVar[int] = 1

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        parts, width = config.layout.parts, config.layout.part_dim
        self.backbone = Backbone(config.channels, config.strides)
        self.projector = part_mlp(parts, width, final_bn=True)
        self.predictor = part_mlp(parts, width, final_bn=False) if config.form == "pretrain" else None
        finetune = config.form == "finetune"
        self.head = SeparateFC(parts, width, width, normalize_weight=True) if finetune else None

    def encode(self, sils: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone per frame, temporal max, pyramid pooling: (N, T, H, W) -> (N, C, P)."""
        if sils.dim() != 4:
            raise ValueError(f"expected silhouettes (N, T, H, W), got shape {tuple(sils.shape)}")
        n, t, h, w = sils.shape
        maps = self.backbone(sils.reshape(n * t, 1, h, w))  # (N*T, C, h', w')
        maps = maps.reshape(n, t, *maps.shape[1:])  # (N, T, C, h', w')
        return pyramid_pool(temporal_max(maps, lengths), self.config.bins)  # (N, C, P)

    def forward(self, sils: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        z = self.projector(self.encode(sils, lengths))  # (N, C, P)
        if self.head is not None:
            emb: torch.Tensor = self.head(F.normalize(z, dim=1))  # (N, C, P)
            return emb.transpose(1, 2)  # (N, P, C), raw
        assert self.predictor is not None
        return F.normalize(self.predictor(z), dim=1).transpose(1, 2)  # (N, P, C), unit parts


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

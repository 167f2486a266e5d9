"""The contract of every registered architecture (train/zoo/registry.py), as a base class.

A network takes (N, T, 64, 44) float silhouettes in [0, 1] and returns its (N, P, C) float32 embedding
(a pure forward: no labels, no training outputs). Its `config` is a frozen dataclass whose `layout` is the
embedding's `EmbeddingLayout`; `min_frames` is the shortest input it takes (shorter sequences are tiled
by the network itself in torch and by the runtime for its ONNX graph).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar

import torch
from torch import nn

from gaitlu.embedding import EmbeddingLayout


class NetworkConfig(Protocol):
    @property
    def layout(self) -> EmbeddingLayout: ...


ConfigT = TypeVar("ConfigT", bound=NetworkConfig, covariant=True)


class GaitNetwork(nn.Module, Generic[ConfigT]):
    """A registered architecture: subclasses set `self.config` and implement `forward(sils)`."""

    config: ConfigT
    min_frames: ClassVar[int] = 1

    if TYPE_CHECKING:  # nn.Module.__call__ returns Any; a network's call is its forward

        def __call__(self, sils: torch.Tensor) -> torch.Tensor: ...

"""Embeddings: their layout, what embeds sequences, and how two embeddings are compared.

A gait model embeds a sequence into P horizontal parts of C floats each, (P, C), flattened part-major
into P*C floats wherever it travels or is stored (the wire, the galleries). `EmbeddingLayout` names the
three numbers so that none is confused with another: `parts`, `part_dim` (floats per part) and `size`
(floats in a flattened embedding). `normalisation` says what the model does to its output:
"per-part-l2" (every part unit-norm, as GaitSSB) or "none" (raw features, as OpenGait's zoo models).

Embeddings are compared part by part: the score of two embeddings is the mean over parts of the cosine
of each part (`mean_part_cosine`). For per-part-normalised embeddings that is the inner product of the
flattened vectors divided by P, which is what the galleries' indexes compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import numpy as np

Normalisation = Literal["per-part-l2", "none"]
NORMALISATIONS: tuple[str, ...] = get_args(Normalisation)
ZERO_NORM = 1e-12  # below this a part counts as all-zero: it is left at zero, never divided by ~0


@dataclass(frozen=True)
class EmbeddingLayout:
    """P parts x C floats per part (`part_dim`), flattened part-major to `size` = P*C floats."""

    parts: int
    part_dim: int  # floats per part (never `channels`: train/'s word for a network's stage widths)
    normalisation: Normalisation = "per-part-l2"

    def __post_init__(self) -> None:
        for name in ("parts", "part_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"an embedding layout needs a positive integer {name}, not {value!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, not {self.normalisation!r}")

    @property
    def size(self) -> int:
        """Floats in one flattened embedding."""
        return self.parts * self.part_dim

    @classmethod
    def from_size(
        cls, size: int, parts: int, normalisation: Normalisation = "per-part-l2"
    ) -> EmbeddingLayout:
        """The layout of `size`-float embeddings in `parts` parts; ValueError unless `parts` divides it."""
        if not (isinstance(size, int) and isinstance(parts, int) and parts >= 1 and size % parts == 0):
            raise ValueError(f"an embedding of {size!r} floats does not split into {parts!r} parts")
        return cls(parts, size // parts, normalisation)

    def unflatten(self, flat: np.ndarray) -> np.ndarray:
        """(N, P*C) or (P*C,) -> (N, P, C), a view where possible."""
        return np.asarray(flat).reshape(-1, self.parts, self.part_dim)

    def flatten(self, emb: np.ndarray) -> np.ndarray:
        """(N, P, C) -> (N, P*C), part-major."""
        return np.asarray(emb).reshape(-1, self.size)


class Embedder(Protocol):
    """Anything that embeds model frames: the runtime over an artifact, or a training checkpoint.
    Its three facts are read-only here, so a plain attribute of a narrower type (`max_frames: int`) fits."""

    @property
    def model_hash(self) -> str:
        """sha256 of the file whose weights compute the vectors: the model's identity."""
        ...

    @property
    def layout(self) -> EmbeddingLayout: ...

    @property
    def max_frames(self) -> int | None:
        """A longer sequence is cut to its first `max_frames` frames (None: never)."""
        ...

    def embed(self, batch: list[np.ndarray]) -> np.ndarray:
        """(T_i, 64, 44) uint8 model frames (`gaitlu.preprocess.to_model_frames`) -> (N, P, C) float32."""
        ...


def part_norms(emb: np.ndarray) -> np.ndarray:
    """(..., P, C) -> (..., P): the L2 norm of every part (einsum: no (..., P, C) temporary)."""
    norms: np.ndarray = np.sqrt(np.einsum("...c,...c->...", emb, emb))
    return norms


def normalise_parts(emb: np.ndarray) -> np.ndarray:
    """(..., P, C) -> the same with every part L2-normalised; an all-zero part stays zero."""
    emb = np.asarray(emb)
    unit: np.ndarray = emb / np.maximum(part_norms(emb), ZERO_NORM)[..., None]
    return unit


def part_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., P, C) x (..., P, C) -> (..., P): the cosine of each pair of parts, in float64 and renormalised,
    so rounding of a stored norm (fp16, int8 models) does not count as disagreement."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    dots: np.ndarray = np.einsum("...c,...c->...", a64, b64)
    cosines: np.ndarray = dots / np.maximum(part_norms(a64) * part_norms(b64), ZERO_NORM**2)
    return cosines


def mean_part_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., P, C) x (..., P, C) -> (...): the score of two embeddings, in [-1, 1]."""
    scores: np.ndarray = part_cosines(a, b).mean(axis=-1)
    return scores


def centre_parts(emb: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(..., P, C) -> every part L2-normalised, minus the (P, C) `centre`, normalised again: the scores of
    centred embeddings spread over [-1, 1] instead of crowding near 1 (the direction they all share)."""
    return normalise_parts(normalise_parts(emb) - centre)

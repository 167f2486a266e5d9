"""A labelled set of embeddings and its `.npz` file form.

The file holds `emb` (N, D float32, the (N, P, C) embedding flattened part-major), `subject`, `cond`,
`view` (N strings) as docs/evaluation.md specifies, plus `parts` (P) so per-part distances can be recomputed;
a file without `parts` is read as one part.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gaitlu.errors import DataError
from gaitlu.evaluation.distance import as_parts
from gaitlu.files import atomic_write


@dataclass(frozen=True)
class EmbeddingSet:
    """Embeddings (N, P, C) float32 with one subject, condition and view label per row."""

    emb: np.ndarray
    subject: np.ndarray
    cond: np.ndarray
    view: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "emb", as_parts(self.emb))
        for name in ("subject", "cond", "view"):
            labels = np.asarray(getattr(self, name), dtype=str)
            if labels.shape != (len(self.emb),):
                raise ValueError(f"{name} has shape {labels.shape}, expected ({len(self.emb)},)")
            object.__setattr__(self, name, labels)

    def __len__(self) -> int:
        return len(self.emb)

    def select(self, mask: np.ndarray) -> EmbeddingSet:
        """The rows where `mask` is true (or the rows at the given indices), in their original order."""
        return EmbeddingSet(self.emb[mask], self.subject[mask], self.cond[mask], self.view[mask])

    @property
    def key(self) -> np.ndarray:
        """`subject-cond-view` per row (Gait3D's PROBE_SET form)."""
        labels = zip(self.subject, self.cond, self.view, strict=True)
        return np.array([f"{s}-{c}-{v}" for s, c, v in labels], dtype=str)


def save_embeddings(data: EmbeddingSet, path: str | Path) -> None:
    """Write `data` to an .npz file atomically (gaitlu.files.atomic_write)."""
    flat = data.emb.reshape(len(data), -1)  # (N, P*C)
    with atomic_write(path) as f:
        parts = np.int64(data.emb.shape[1])
        np.savez(f, emb=flat, parts=parts, subject=data.subject, cond=data.cond, view=data.view)


def load_embeddings(path: str | Path) -> EmbeddingSet:
    """Read a file written by `save_embeddings` (or any tool writing the same keys)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("emb", "subject", "cond", "view") if k not in f.files]
            if missing:
                raise DataError(f"embedding file {path} lacks {', '.join(missing)}")
            emb = f["emb"].astype(np.float32)
            parts = int(f["parts"]) if "parts" in f.files else 1
            labels = [f[k] for k in ("subject", "cond", "view")]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read embedding file {path}: {exc}") from exc
    if emb.ndim != 2 or parts < 1 or emb.shape[1] % parts:
        raise DataError(f"embedding file {path}: emb shape {emb.shape} does not split into {parts} parts")
    try:
        return EmbeddingSet(emb.reshape(len(emb), parts, -1), *labels)  # (N, P, C)
    except ValueError as exc:
        raise DataError(f"embedding file {path}: {exc}") from exc

"""Helpers for the corpus tests (not a test module itself): small GaitLU-style trees, CLI exit codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gaitlu.safepickle import dumps_array


def random_masks(rng: np.random.Generator, frames: int, width: int = 44) -> np.ndarray:
    """(frames, 64, width) uint8 of 0/255: a blob per frame, enough structure to compress a little."""
    yy, xx = np.mgrid[:64, :width]
    cx = rng.uniform(width * 0.3, width * 0.7, size=(frames, 1, 1))
    body = ((xx - cx) / (width * 0.15)) ** 2 + ((yy - 30) / 24) ** 2 < 1  # (frames, 64, width)
    noise = rng.random((frames, 64, width)) < 0.02
    return ((body ^ noise) * 255).astype(np.uint8)


def make_tree(root: Path, n: int, seed: int = 0, frames: tuple[int, int] = (20, 60)) -> dict[str, np.ndarray]:
    """Write `n` sequences as `silhouette_cut_pkl/<a>/<b>/<c>/<a>_<b>_<c>.pkl`; return id -> array."""
    rng = np.random.default_rng(seed)
    tree = root / "silhouette_cut_pkl"
    seqs = {}
    for i in range(n):
        parts = (f"{i // 25:03d}", f"{i // 5 % 5:03d}", f"{i % 5:03d}")
        seq_id = "_".join(parts)
        folder = tree.joinpath(*parts)
        folder.mkdir(parents=True, exist_ok=True)
        seqs[seq_id] = random_masks(rng, int(rng.integers(*frames)))
        (folder / f"{seq_id}.pkl").write_bytes(dumps_array(seqs[seq_id]))
    return seqs

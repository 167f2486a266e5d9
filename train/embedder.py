"""Embed silhouette sequences with a gaitlu checkpoint: the torch side of `gaitlu eval --checkpoint`.

Sequences are embedded whole, in natural order, up to MAX_FRAMES frames: as OpenGait's evaluator
(`all_ordered` sampling with `frames_all_limit: 720` keeps the first 720 frames), so a longer sequence
is cut to its first 720 frames here too. Batches are padded to their longest sequence and the model
ignores the padding (`lengths`), so an embedding does not depend on what it was batched with. Batches
are split so that one forward sees at most `frame_budget` padded frames, which bounds memory on CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from gaitlu.errors import SequenceError
from gaitlu.files import sha256_file
from gaitlu.preprocess import FRAME_HEIGHT, MODEL_WIDTH
from train.checkpoint import load_checkpoint
from train.model import GaitSSB

logger = logging.getLogger(__name__)

MAX_FRAMES = 720  # OpenGait's frames_all_limit at test time
FRAME_BUDGET = 1024  # padded frames per forward call


def _check(seq: np.ndarray, i: int) -> np.ndarray:
    """SequenceError unless `seq` is model input: (T >= 1, 64, 44) uint8."""
    shape = getattr(seq, "shape", None)
    if not isinstance(seq, np.ndarray) or seq.dtype != np.uint8 or shape[1:] != (FRAME_HEIGHT, MODEL_WIDTH):
        raise SequenceError(
            f"sequence {i}: expected (T, {FRAME_HEIGHT}, {MODEL_WIDTH}) uint8 model frames, got "
            f"{getattr(seq, 'dtype', type(seq).__name__)} {shape} (see gaitlu.preprocess.to_model_frames)"
        )
    if len(seq) == 0:
        raise SequenceError(f"sequence {i} has no frames")
    return seq


def _chunks(lengths: list[int], budget: int) -> list[slice]:
    """Consecutive runs whose padded size (count x longest) stays within `budget` (at least one each)."""
    runs, start, longest = [], 0, 0
    for i, n in enumerate(lengths):
        if i > start and max(longest, n) * (i - start + 1) > budget:
            runs.append(slice(start, i))
            start, longest = i, 0
        longest = max(longest, n)
    if lengths:
        runs.append(slice(start, len(lengths)))
    return runs


class CheckpointEmbedder:
    """A GaitSSB in eval mode behind `embed(list of (T, 64, 44) uint8) -> (N, P, C) float32` (a
    `gaitlu.embedding.Embedder`, as the runtime's `ArtifactEmbedder` is)."""

    def __init__(
        self,
        model: GaitSSB,
        model_hash: str,
        device: torch.device,
        max_frames: int = MAX_FRAMES,
        frame_budget: int = FRAME_BUDGET,
    ) -> None:
        self.model = model.to(device).eval()
        self.model_hash = model_hash
        self.device = device
        self.max_frames = max_frames
        self.frame_budget = frame_budget
        self.layout = model.config.layout

    @torch.inference_mode()
    def _forward(self, batch: list[np.ndarray]) -> np.ndarray:
        lengths = [len(s) for s in batch]
        padded = np.zeros((len(batch), max(lengths), FRAME_HEIGHT, MODEL_WIDTH), np.uint8)  # (N, T, 64, 44)
        for row, seq in zip(padded, batch, strict=True):
            row[: len(seq)] = seq
        sils = torch.from_numpy(padded).to(self.device).float().div_(255)
        out = self.model(sils, torch.tensor(lengths, device=self.device))  # (N, P, C)
        return out.float().cpu().numpy()

    def embed(self, batch: list[np.ndarray]) -> np.ndarray:
        seqs = [_check(s, i)[: self.max_frames] for i, s in enumerate(batch)]
        if not seqs:
            return np.zeros((0, self.layout.parts, self.layout.channels), np.float32)
        runs = _chunks([len(s) for s in seqs], self.frame_budget)
        return np.concatenate([self._forward(seqs[run]) for run in runs])  # (N, P, C)


def load_checkpoint_embedder(
    path: str | Path, device: str | torch.device | None = None
) -> CheckpointEmbedder:
    """A CheckpointEmbedder for a gaitlu checkpoint; `device` defaults to CUDA when available."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, _ = load_checkpoint(path)
    embedder = CheckpointEmbedder(model, sha256_file(path), device)
    layout = embedder.layout
    logger.info(
        "loaded %s (%s form, %d x %d) on %s", path, model.config.form, layout.parts, layout.channels, device
    )
    return embedder

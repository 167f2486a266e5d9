"""Embed silhouette sequences with a gaitlu checkpoint: the torch side of `gaitlu eval --checkpoint`.

The output is the network's own embedding, raw where the model's is raw (OpenGait's evaluator compares
exactly that), for every registered architecture. Sequences are embedded whole, in natural order, up to
`max_frames` frames: the imported OpenGait config's `frames_all_limit` when it has one (None: all
frames, as OpenGait then does), else 720, the limit of OpenGait's usual test sampler.

Sequences of equal length are batched along the batch axis and nothing is ever padded or packed along
time: DeepGaitV2-P3D and GaitGL convolve over time, so a padded frame or a neighbouring sequence would
change the embedding. Each forward sees at most `frame_budget` frames, which bounds memory on CPU.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from gaitlu.errors import SequenceError
from gaitlu.files import sha256_file
from gaitlu.manifest import Evaluation
from gaitlu.preprocess import FRAME_HEIGHT, MODEL_WIDTH
from train.checkpoint import architecture_name, load_checkpoint
from train.network import GaitNetwork, NetworkConfig

logger = logging.getLogger(__name__)

MAX_FRAMES = 720  # OpenGait's frames_all_limit in its usual test sampler
FRAME_BUDGET = 1024  # frames per forward call


def _check(seq: np.ndarray, i: int) -> np.ndarray:
    """SequenceError unless `seq` is model input: (T >= 1, 64, 44) uint8."""
    shape = getattr(seq, "shape", None)
    frames = (FRAME_HEIGHT, MODEL_WIDTH)
    if not isinstance(seq, np.ndarray) or seq.dtype != np.uint8 or seq.shape[1:] != frames:
        raise SequenceError(
            f"sequence {i}: expected (T, {FRAME_HEIGHT}, {MODEL_WIDTH}) uint8 model frames, got "
            f"{getattr(seq, 'dtype', type(seq).__name__)} {shape} (see gaitlu.preprocess.to_model_frames)"
        )
    if len(seq) == 0:
        raise SequenceError(f"sequence {i} has no frames")
    return seq


def equal_length_calls(lengths: list[int], budget: int) -> list[list[int]]:
    """Row indices per forward: equal lengths together, at most `budget` frames (at least one row) each."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, length in enumerate(lengths):
        groups[length].append(i)
    calls = []
    for length, rows in groups.items():
        size = max(1, budget // length)
        calls += [rows[start : start + size] for start in range(0, len(rows), size)]
    return calls


class CheckpointEmbedder:
    """A network in eval mode behind `embed(list of (T, 64, 44) uint8) -> (N, P, C) float32` (a
    `gaitlu.embedding.Embedder`, as the runtime's `ArtifactEmbedder` is)."""

    def __init__(
        self,
        model: GaitNetwork[NetworkConfig],
        model_hash: str,
        device: torch.device,
        max_frames: int | None = MAX_FRAMES,
        frame_budget: int = FRAME_BUDGET,
        evaluation: Evaluation | None = None,
    ) -> None:
        self.model = model.to(device).eval()
        self.model_hash = model_hash
        self.device = device
        self.max_frames = max_frames
        self.frame_budget = frame_budget
        self.evaluation = evaluation  # OpenGait's evaluator settings for an imported model
        self.layout = model.config.layout

    @torch.inference_mode()
    def _forward(self, batch: list[np.ndarray]) -> np.ndarray:
        sils = torch.from_numpy(np.stack(batch)).to(self.device).float().div_(255)  # (n, T, 64, 44)
        out: torch.Tensor = self.model(sils)  # (n, P, C)
        return out.float().cpu().numpy()

    def embed(self, batch: list[np.ndarray]) -> np.ndarray:
        seqs = [_check(s, i)[: self.max_frames] for i, s in enumerate(batch)]
        out = np.empty((len(seqs), self.layout.parts, self.layout.part_dim), np.float32)  # (N, P, C)
        for rows in equal_length_calls([len(s) for s in seqs], self.frame_budget):
            out[rows] = self._forward([seqs[i] for i in rows])
        return out


def load_checkpoint_embedder(
    path: str | Path, device: str | torch.device | None = None
) -> CheckpointEmbedder:
    """A CheckpointEmbedder for a gaitlu checkpoint; `device` defaults to CUDA when available. An imported
    OpenGait model embeds as its config's evaluator does (frames limit) and carries its settings."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, ckpt = load_checkpoint(path)
    recorded = (ckpt.get("config") or {}).get("evaluation")
    evaluation = Evaluation.model_validate(recorded) if recorded else None
    max_frames = evaluation.frames_limit if evaluation else MAX_FRAMES
    embedder = CheckpointEmbedder(model, sha256_file(path), device, max_frames, evaluation=evaluation)
    logger.info(
        "loaded %s (%s, %d x %d) on %s",
        path,
        architecture_name(ckpt),
        embedder.layout.parts,
        embedder.layout.part_dim,
        device,
    )
    return embedder

"""Numerical checks of an export: fp32 ONNX versus PyTorch (parity) and fp16/int8 versus fp32 (quality).

Cosines are taken per part, because ranking averages over parts: a part that drifts would be hidden by
a whole-vector cosine over 31 parts. The largest absolute difference is recorded too, since a raw
(not normalised) embedding is compared by Euclidean distance in OpenGait's evaluator.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
import torch

from export.calibration import LabelledSet
from export.errors import ParityError
from export.graph import INPUT_NAME
from gaitlu.embedding import part_cosines
from gaitlu.evaluation.distance import pairwise_distances
from gaitlu.manifest import Parity, ParityCase, Quality
from gaitlu.preprocess import FRAME_HEIGHT, MODEL_WIDTH
from train.network import GaitNetwork, NetworkConfig

logger = logging.getLogger(__name__)

ParityMode = Literal["quick", "full"]
PARITY_THRESHOLD = 0.99999
# (batch, frames). "full" is every pair of batch 1/4/16 and T 1/30/92/300 (8,883 frames: minutes for the
# paper-size model on a 2-core CPU). "quick" covers each batch size and each frame count once (528 frames).
PARITY_GRIDS: dict[str, tuple[tuple[int, int], ...]] = {
    "quick": ((16, 1), (4, 30), (1, 92), (1, 300)),
    "full": tuple((b, t) for b in (1, 4, 16) for t in (1, 30, 92, 300)),
}


def cpu_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session with full graph optimisation (1.6x over BASIC on this CPU)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(session: ort.InferenceSession, sils: np.ndarray, parts: int) -> np.ndarray:
    """(N, T, 64, 44) float32 -> (N, P, C) float32."""
    flat: np.ndarray = session.run(None, {INPUT_NAME: sils})[0]  # (N, P*C)
    return flat.reshape(len(sils), parts, -1).astype(np.float32)  # (N, P, C)


def noise_silhouettes(rng: np.random.Generator, batch: int, frames: int) -> np.ndarray:
    """Binary (N, T, 64, 44) float32 frames: parity compares two implementations of one function, so
    any input does; binary noise exercises every pixel."""
    return (rng.random((batch, frames, FRAME_HEIGHT, MODEL_WIDTH)) < 0.3).astype(np.float32)


def check_parity(
    model: GaitNetwork[NetworkConfig],
    session: ort.InferenceSession,
    mode: ParityMode,
    threshold: float = PARITY_THRESHOLD,
    cases: Sequence[tuple[int, int]] | None = None,
) -> Parity:
    """Compare the ONNX graph with PyTorch eager on each (batch, frames) case; ParityError below
    `threshold` (worst per-part cosine). `cases` overrides the mode's grid (tests use small ones); frame
    counts below the model's `min_frames` are raised to it (the graph takes no fewer)."""
    rng = np.random.default_rng(0)
    parts = model.config.layout.parts
    results = []
    for batch, wanted in cases or PARITY_GRIDS[mode]:
        frames = max(wanted, model.min_frames)
        sils = noise_silhouettes(rng, batch, frames)
        with torch.inference_mode():
            expected = model(torch.from_numpy(sils)).numpy()  # (N, P, C)
        actual = run_session(session, sils, parts)
        case = ParityCase(
            batch=batch,
            frames=frames,
            min_cosine=float(part_cosines(actual, expected).min()),
            max_abs_diff=float(np.abs(actual - expected).max()),
        )
        logger.info("parity batch %d x %d frames: min cosine %.8f", batch, frames, case.min_cosine)
        results.append(case)
    parity = Parity(
        mode=mode,
        threshold=threshold,
        min_cosine=min(c.min_cosine for c in results),
        max_abs_diff=max(c.max_abs_diff for c in results),
        cases=results,
    )
    if not parity.min_cosine >= threshold:  # also catches NaN
        worst = min(results, key=lambda c: c.min_cosine)
        raise ParityError(
            f"ONNX output differs from PyTorch: min per-part cosine {parity.min_cosine:.8f} < {threshold} "
            f"(worst at batch {worst.batch} x {worst.frames} frames, "
            f"max abs diff {parity.max_abs_diff:.3g}); nothing was written"
        )
    return parity


def rank1(emb: np.ndarray, subjects: np.ndarray) -> float:
    """Leave-one-out Rank-1 (%) with OpenGait's cosine distance: each sequence's nearest other sequence
    must show the same subject (ties go to the lower index, so the result is reproducible)."""
    dist = pairwise_distances(emb, emb, "cos")  # (N, N)
    np.fill_diagonal(dist, np.inf)
    return float(100.0 * np.mean(subjects[dist.argmin(axis=1)] == subjects))


def variant_quality(
    reference: ort.InferenceSession,
    variant: ort.InferenceSession,
    held_out: Sequence[np.ndarray],
    labelled: LabelledSet,
    parts: int,
    note: str,
) -> Quality:
    """A reduced-precision variant against fp32: cosines over all (T, 64, 44) float32 sequences given,
    Rank-1 of both on the labelled ones."""
    sequences = [*held_out, *labelled.sequences]
    ref = np.concatenate([run_session(reference, seq[None], parts) for seq in sequences])  # (N, P, C)
    out = np.concatenate([run_session(variant, seq[None], parts) for seq in sequences])  # (N, P, C)
    per_part = part_cosines(out, ref)  # (N, P), renormalised: fp16 rounding of a norm is no disagreement
    per_sequence = per_part.mean(axis=1)  # mean_part_cosine: what inner-product ranking sees
    n_real = len(held_out)
    rank1_fp32 = rank1(ref[n_real:], labelled.subjects)
    rank1_variant = rank1(out[n_real:], labelled.subjects)
    return Quality(
        sequences=len(sequences),
        min_cosine=float(per_sequence.min()),
        mean_cosine=float(per_sequence.mean()),
        min_part_cosine=float(per_part.min()),
        rank1_fp32=rank1_fp32,
        rank1=rank1_variant,
        rank1_drop=rank1_fp32 - rank1_variant,
        note=note,
    )

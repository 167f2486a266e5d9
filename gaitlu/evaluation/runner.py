"""Embed a labelled test set with any `embed` function, so every model is measured by the same code.

`embed(batch: list[(T, 64, 44) uint8]) -> (N, P, C)` is the whole contract: the GEI baseline, the torch
checkpoint and the ONNX artifact all plug in here. Sequences are read whole, in natural frame order,
through the shared loader and preprocessing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gaitlu.errors import ConfigError, DataError, SequenceError
from gaitlu.evaluation.embeddings import EmbeddingSet
from gaitlu.labelled import LabelledSequence, Partition, load_partition, read_labelled, scan_labelled
from gaitlu.preprocess import to_model_frames

logger = logging.getLogger(__name__)

Embed = Callable[[list[np.ndarray]], np.ndarray]

MAX_FRAMES = 720  # OpenGait's test-time frame limit (frames_all_limit)
# CASIA-B's standard "LT" split, used when a CASIA-B tree comes without partition.json.
CASIA_B_LT = Partition(
    train=tuple(f"{i:03d}" for i in range(1, 75)), test=tuple(f"{i:03d}" for i in range(75, 125))
)


def resolve_partition(dataset: Path, protocol: str, partition: Path | None) -> Partition:
    """The given partition, else `<dataset>/partition.json`, else (CASIA-B only) the LT split."""
    if partition is not None:
        return load_partition(partition)
    default = dataset / "partition.json"
    if default.is_file():
        return load_partition(default)
    if protocol == "casia-b":
        logger.warning("no partition.json in %s: using the CASIA-B LT split (test subjects 075-124)", dataset)
        return CASIA_B_LT
    raise ConfigError(
        f"no --partition given and {default} does not exist; the {protocol} protocol needs the dataset's "
        "partition JSON (OpenGait ships one per dataset under datasets/<name>/)"
    )


def select_test_sequences(dataset: Path, partition: Partition) -> list[LabelledSequence]:
    """The sequences of the partition's test subjects; an empty result is a DataError."""
    sequences = scan_labelled(dataset, set(partition.test))
    if not sequences:
        raise DataError(f"no sequences of the {len(partition.test)} test subjects found under {dataset}")
    return sequences


def model_frames(seq: LabelledSequence, max_frames: int | None = MAX_FRAMES) -> np.ndarray:
    """(T, 64, 44) uint8 frames of one sequence, in order; longer ones keep their first `max_frames` (None:
    all), as OpenGait's evaluator (`all_ordered`) and every gaitlu embedder (torch and ONNX) do."""
    frames = to_model_frames(read_labelled(seq))
    if len(frames) == 0:
        raise SequenceError(f"sequence {seq.key} has no usable frames")
    return frames[:max_frames]


def _checked(out: np.ndarray, batch_len: int) -> np.ndarray:
    out = np.asarray(out, dtype=np.float32)
    if out.ndim not in (2, 3) or len(out) != batch_len:
        raise ConfigError(f"the embedder returned shape {out.shape} for a batch of {batch_len} sequences")
    return out if out.ndim == 3 else out[:, None, :]  # (N, P, C)


@dataclass(frozen=True)
class EmbedRun:
    """Embeddings of the readable sequences and the keys of those that could not be read."""

    data: EmbeddingSet
    skipped: tuple[str, ...]


def embed_sequences(
    sequences: list[LabelledSequence],
    embed: Embed,
    batch_size: int = 8,
    max_frames: int | None = MAX_FRAMES,
    progress: bool = True,
) -> EmbedRun:
    """Embed every sequence in order, `batch_size` at a time; unreadable sequences are logged and
    skipped (real datasets hold a few), but if none can be read it is a DataError."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    kept: list[LabelledSequence] = []
    skipped: list[str] = []
    chunks: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        chunks.append(_checked(embed(batch), len(batch)))
        batch.clear()

    # disable=None: tqdm draws the bar only on a terminal, so logs and CI output stay clean.
    for seq in tqdm(sequences, desc="embedding", unit="seq", disable=None if progress else True):
        try:
            batch.append(model_frames(seq, max_frames))
        except SequenceError as exc:
            logger.warning("skipped: %s", exc)
            skipped.append(seq.key)
            continue
        kept.append(seq)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not kept:
        raise DataError(f"none of the {len(sequences)} sequences could be read")
    shapes = {c.shape[1:] for c in chunks}
    if len(shapes) > 1:
        raise ConfigError(f"the embedder returned different shapes across batches: {sorted(shapes)}")
    data = EmbeddingSet(
        np.concatenate(chunks),
        np.array([s.subject for s in kept]),
        np.array([s.condition for s in kept]),
        np.array([s.view for s in kept]),
    )
    return EmbedRun(data, tuple(skipped))

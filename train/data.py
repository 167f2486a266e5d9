"""The pretraining input stream: this rank's batches of two augmented clips per unlabelled sequence.

Order and resume (why the stream is built this way):
- Each epoch shuffles the corpus by (seed, epoch) and splits it over ranks with the corpus API
  (`Corpus.epoch_indices`, rank r takes every world-th sequence). Batch k of every rank then covers
  positions k*B .. (k+1)*B - 1 of the shuffle (B = global batch): each step sees B distinct sequences,
  the same set whatever the number of ranks.
- Data-loader workers take whole batches in turn (batch c goes to worker c % num_workers); the
  DataLoader hands batches back in that same round-robin order, so the stream is identical for any
  number of workers.
- Each sequence's clips and augmentation come from a generator seeded by (seed, epoch, sequence
  index), never from worker or global state.
So a position (epoch, sequences consumed in it) pins the stream exactly: resume skips to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from corpus.reader import Corpus
from gaitlu.errors import DataError, SequenceError
from gaitlu.preprocess import to_model_frames
from train.augment import AugmentConfig, two_views

logger = logging.getLogger(__name__)

MAX_SUBSTITUTES = 10  # unreadable sequences replaced in a row before giving up


@dataclass(frozen=True)
class DataPosition:
    """Where the stream stands: `sequences` of epoch `epoch` have been consumed (a multiple of B)."""

    epoch: int = 0
    sequences: int = 0


class PretrainBatch(NamedTuple):
    view_a: torch.Tensor  # (b, frames, 64, 44) float32 in [0, 1]
    view_b: torch.Tensor  # (b, frames, 64, 44) float32, the other clip of the same sequences
    indices: torch.Tensor  # (b,) int64 corpus positions of the sequences
    epoch: int
    batch: int  # index of this step's batch within the epoch


def steps_per_epoch(num_sequences: int, global_batch: int, world_size: int) -> int:
    """Whole global batches per epoch (the shuffle's remainder is dropped, differently each epoch)."""
    per_rank = global_batch // world_size
    return (num_sequences // world_size) // per_rank


class PretrainStream(IterableDataset[PretrainBatch]):
    """Endless `PretrainBatch`es for one rank, starting at `start` (see the module docstring)."""

    def __init__(
        self,
        corpus: Corpus,
        global_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start: DataPosition = DataPosition(),
        augment: AugmentConfig = AugmentConfig(),
    ) -> None:
        super().__init__()
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by world size {world_size}")
        self.corpus = corpus
        self.global_batch = global_batch
        self.per_rank = global_batch // world_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start = start
        self.augment = augment
        self.steps = steps_per_epoch(len(corpus), global_batch, world_size)
        if self.steps == 0:
            raise DataError(
                f"the corpus has {len(corpus)} sequences, fewer than one global batch ({global_batch})"
            )

    def __iter__(self) -> Iterator[PretrainBatch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch, first = self.start.epoch, self.start.sequences // self.global_batch
        produced = 0  # batches of this stream so far, over all workers
        while True:
            share = self.corpus.epoch_indices(epoch, self.seed, self.rank, self.world_size, drop_last=True)
            for k in range(first, self.steps):
                if produced % workers == worker:
                    yield self._batch(share[k * self.per_rank : (k + 1) * self.per_rank], epoch, k)
                produced += 1
            epoch, first = epoch + 1, 0

    def _batch(self, indices: np.ndarray, epoch: int, k: int) -> PretrainBatch:
        views = [self._views(int(i), epoch) for i in indices]
        a = np.stack([v[0] for v in views])  # b x (frames, 64, 44) -> (b, frames, 64, 44)
        b = np.stack([v[1] for v in views])
        return PretrainBatch(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(indices), epoch, k)

    def _views(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Two clips of sequence `index`; an unreadable one is replaced by a seeded random other."""
        rng = np.random.default_rng([self.seed, epoch, index])
        for _ in range(MAX_SUBSTITUTES):
            try:
                return two_views(to_model_frames(self.corpus.get(index)), rng, self.augment)
            except (DataError, SequenceError) as exc:
                logger.warning("skipping sequence %d (%s)", index, exc)
                index = int(rng.integers(len(self.corpus)))
        raise DataError(f"{MAX_SUBSTITUTES} unreadable sequences in a row: run `gaitlu data verify`")

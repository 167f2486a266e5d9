"""P x K batches of fixed-length clips from a labelled dataset, for the triplet loss of fine-tuning.

Facts follow OpenGait's `TripletSampler` and its `fixed_unordered` frame sampling (configs/gaitssb/
finetune_*.yaml): each batch takes P distinct subjects and K sequences of each (drawn with replacement
only when a subject has fewer than K), and each sequence gives `frames` frames drawn at random from the
whole sequence (with replacement only when it is shorter). We sort the drawn frames: the network max-pools
over time, so order does not change the result, and sorted clips are easier to inspect.

Every draw comes from a generator seeded by (seed, step) or (seed, step, slot), so batch `step` is the
same whatever the number of data workers and after a resume.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gaitlu.errors import ConfigError, DataError, SequenceError
from gaitlu.labelled import LabelledSequence, load_partition, read_labelled, scan_labelled
from gaitlu.preprocess import to_float, to_model_frames
from train.shifts import ShiftConfig, training_clip

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipRequest:
    """One slot of a batch: which sequence to read and the seed of its frame draw."""

    index: int
    seed: int


class PKBatchSampler:
    """Infinite P x K batches of `ClipRequest`s over sequences labelled by subject.

    A batch lists its P subjects' K requests subject by subject (label order is what the loss needs;
    with BN statistics frozen during fine-tuning, in-batch order has no effect).
    """

    def __init__(self, subjects: Sequence[str], p: int, k: int, seed: int = 0, start_step: int = 0) -> None:
        if p < 2 or k < 2:
            raise ConfigError(f"P x K sampling needs P >= 2 subjects and K >= 2 sequences, got {p} x {k}")
        by_subject: dict[str, list[int]] = {}
        for index, subject in enumerate(subjects):
            by_subject.setdefault(subject, []).append(index)
        if len(by_subject) < p:
            raise DataError(f"P x K sampling needs P={p} subjects, the training set has {len(by_subject)}")
        self.groups = [np.array(by_subject[s]) for s in sorted(by_subject)]
        self.p, self.k, self.seed, self.start_step = p, k, seed, start_step

    def batch(self, step: int) -> list[ClipRequest]:
        """The requests of batch number `step` (a pure function of seed and step)."""
        rng = np.random.default_rng([self.seed, step])
        requests: list[ClipRequest] = []
        for g in rng.choice(len(self.groups), size=self.p, replace=False):
            group = self.groups[g]
            chosen = rng.choice(group, size=self.k, replace=len(group) < self.k)
            seeds = rng.integers(2**63, size=self.k)
            requests.extend(ClipRequest(int(i), int(s)) for i, s in zip(chosen, seeds, strict=True))
        return requests

    def __iter__(self) -> Iterator[list[ClipRequest]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


def sample_frames(num_frames: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of `frames` frames drawn from `num_frames` (with replacement only if too few)."""
    return np.sort(rng.choice(num_frames, size=frames, replace=num_frames < frames))


class LabelledClips(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Reads one sequence per `ClipRequest` and returns (clip (frames, 64, 44) float in [0, 1], label).

    Labels are the subjects' positions in `subject_ids`. Sequences are re-read on every request (the
    data workers overlap that with the step). Real datasets hold a few unreadable sequences (empty
    CASIA-B folders): such a request is served by another sequence of the same subject, with a warning,
    so a batch keeps its P x K shape; a subject with no readable sequence at all is a DataError.
    """

    def __init__(
        self, sequences: Sequence[LabelledSequence], frames: int, shifts: ShiftConfig | None = None
    ) -> None:
        if frames < 1:
            raise ConfigError(f"frames per clip must be >= 1, got {frames}")
        self.sequences = list(sequences)
        self.subject_ids = sorted({s.subject for s in self.sequences})
        self._label = {s: i for i, s in enumerate(self.subject_ids)}
        self._by_subject: dict[str, list[int]] = {}
        for index, seq in enumerate(self.sequences):
            self._by_subject.setdefault(seq.subject, []).append(index)
        self._unreadable: set[int] = set()
        self.frames = frames
        self.shifts = shifts  # capture-shift augmentation (train/shifts.py); None: plain frame draws

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def subjects(self) -> list[str]:
        return [s.subject for s in self.sequences]

    def _read(self, index: int) -> np.ndarray | None:
        if index in self._unreadable:
            return None
        try:
            return to_model_frames(read_labelled(self.sequences[index]))  # (T, 64, 44) uint8
        except SequenceError as exc:
            logger.warning("training sequence skipped: %s", exc)
            self._unreadable.add(index)
            return None

    def __getitem__(self, request: ClipRequest) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng(request.seed)
        subject = self.sequences[request.index].subject
        others = [i for i in rng.permutation(self._by_subject[subject]) if i != request.index]
        for index in (request.index, *others):
            frames = self._read(int(index))
            if frames is not None:
                if self.shifts is None:
                    clip = frames[sample_frames(len(frames), self.frames, rng)]
                else:
                    clip = training_clip(frames, self.frames, self.shifts, rng)
                return torch.from_numpy(to_float(clip)), self._label[subject]
        raise DataError(f"no sequence of training subject {subject} could be read")


def training_clips(
    dataset: Path, partition: Path, frames: int, subjects_per_batch: int, shifts: ShiftConfig | None = None
) -> LabelledClips:
    """The partition's TRAIN_SET sequences under `dataset` as clips; DataError when there are none or
    fewer subjects than a batch takes."""
    split = load_partition(partition)
    sequences = scan_labelled(dataset, set(split.train))
    if not sequences:
        raise DataError(f"no sequences of the {len(split.train)} TRAIN_SET subjects found under {dataset}")
    clips = LabelledClips(sequences, frames, shifts)
    if len(clips.subject_ids) < subjects_per_batch:
        raise DataError(
            f"{dataset}: {len(clips.subject_ids)} training subjects, fewer than "
            f"data.subjects_per_batch = {subjects_per_batch}"
        )
    return clips

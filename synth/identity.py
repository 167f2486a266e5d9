"""A synthetic person (body + gait) and the seeds that make every file reproducible.

Every random draw comes from a numpy SeedSequence keyed by (seed, subject, sequence index), so a file's
bytes depend only on those numbers, never on the worker that rendered it or the order of work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.body import Body, sample_body
from synth.motion import Gait, sample_gait

_IDENTITY_STREAM = 0  # spawn key component for the person; sequences use 1 + their index


@dataclass(frozen=True)
class Identity:
    """One synthetic person: what stays the same across all their sequences."""

    body: Body
    gait: Gait


def sample_identity(rng: np.random.Generator) -> Identity:
    return Identity(body=sample_body(rng), gait=sample_gait(rng))


def identity_rng(seed: int, subject: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(subject, _IDENTITY_STREAM)))


def sequence_rng(seed: int, subject: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(subject, 1 + index)))


def identity_for(seed: int, subject: int) -> Identity:
    """The person with this subject number under this seed."""
    return sample_identity(identity_rng(seed, subject))

"""Capture shifts: each does what another camera does to a sequence, repeatably, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from gaitlu.errors import ConfigError
from tests.support.walkers import walking_sequence
from train.shifts import (
    ONE_CYCLE,
    TEST_SHIFTS,
    ShiftConfig,
    band,
    half_rate,
    holes,
    low_res,
    one_cycle,
    shifted,
    thickness,
    training_clip,
)

SEQ = walking_sequence(5, frames=40)  # (40, 64, 44) uint8, 0 / 255
OFF = ShiftConfig(**{name: 0.0 for name in vars(ShiftConfig())})


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_low_res_blocky_is_constant_on_2x2_blocks_binary_and_close_to_the_original() -> None:
    out = low_res(SEQ, rng(), blocky=True)
    assert out.shape == SEQ.shape and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 255}
    blocks = out.reshape(40, 32, 2, 22, 2)
    assert (blocks == blocks[:, :, :1, :, :1]).all()  # every 2x2 block one value: 32 x 22 shown 2x
    assert np.mean(out != SEQ) < 0.1


def test_one_cycle_is_consecutive_frames_and_half_rate_every_second_frame() -> None:
    cycle = one_cycle(SEQ, rng(1))
    start = next(i for i in range(len(SEQ)) if np.array_equal(SEQ[i], cycle[0]))
    assert len(cycle) == ONE_CYCLE and np.array_equal(cycle, SEQ[start : start + ONE_CYCLE])
    assert one_cycle(SEQ[:4], rng()).shape[0] == 4  # shorter than a cycle: kept whole
    half = half_rate(SEQ, rng(2))
    assert len(half) == 20 and any(np.array_equal(half, SEQ[p::2]) for p in (0, 1))


def test_body_shifts_change_the_body_as_named() -> None:
    area = (SEQ > 0).sum()
    assert (
        (thickness(SEQ, rng(), thinner=True) > 0).sum()
        < area
        < (thickness(SEQ, rng(), thinner=False) > 0).sum()
    )
    holed = holes(SEQ, rng(3))
    assert (holed <= SEQ).all() and (holed > 0).sum() <= area
    banded = band(SEQ, rng(4))
    erased = np.flatnonzero((banded == 0).all(axis=(0, 2)) & ~(SEQ == 0).all(axis=(0, 2)))
    assert 4 <= len(erased) <= 12


def test_a_clip_without_shifts_is_a_sorted_draw_of_the_sequences_frames() -> None:
    marked = SEQ.copy()
    marked[:, 0] = 0
    marked[np.arange(40), 0, np.arange(40)] = 255  # frame t carries its number in its top row
    clip = training_clip(marked, 16, OFF, rng(5))
    assert clip.shape == (16, 64, 44) and clip.dtype == np.uint8
    index = clip[:, 0].argmax(axis=1)
    assert list(index) == sorted(index) and np.array_equal(clip, marked[index])


def test_clips_are_repeatable_by_seed_and_every_shift_is_drawn() -> None:
    always = ShiftConfig(p_low_res=1, p_short=1, p_thickness=1, p_holes=1, p_blobs=1, p_band=1, p_flip=1)
    a, b = training_clip(SEQ, 12, always, rng(6)), training_clip(SEQ, 12, always, rng(6))
    assert np.array_equal(a, b) and a.shape == (12, 64, 44)
    assert not np.array_equal(a, training_clip(SEQ, 12, OFF, rng(6)))


def test_test_shifts_are_repeatable_and_unknown_ones_refused() -> None:
    for name in TEST_SHIFTS:
        first, again = shifted([SEQ, SEQ], name), shifted([SEQ, SEQ], name)
        assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
        assert all(x.dtype == np.uint8 and x.shape[1:] == (64, 44) for x in first)
    with pytest.raises(ConfigError, match="unknown shift 'fisheye'"):
        shifted([SEQ], "fisheye")


def test_probabilities_outside_0_1_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"augment\.p_low_res must be in"):
        ShiftConfig(p_low_res=1.2)

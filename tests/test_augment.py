"""GaitSSB pretraining input: clip sampling and the per-clip augmentation recipe."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from gaitlu.errors import SequenceError
from tests.support.corpus import random_masks
from train import augment

RECIPE = augment.AugmentConfig()
_ALL_OFF = {"p_affine": 0.0, "p_perspective": 0.0, "p_flip": 0.0, "p_dilate": 0.0, "p_blur": 0.0}


def only(*names: str) -> augment.AugmentConfig:
    """The recipe with every augmentation off except the named ones (probability 1)."""
    return augment.AugmentConfig(**{name: 1.0 if name in names else p for name, p in _ALL_OFF.items()})


def _numbered(frames: int) -> np.ndarray:
    """Frame t is filled with the value t, so a clip shows which frames it took."""
    return np.broadcast_to(np.arange(frames, dtype=np.uint8)[:, None, None], (frames, 64, 44)).copy()


def test_clip_is_16_frames_in_order_from_a_20_frame_window():
    rng = np.random.default_rng(0)
    for _ in range(200):
        taken = augment.sample_clip(_numbered(92), rng, window=20, keep=16)[:, 0, 0].astype(int)
        assert taken.shape == (16,) and (np.diff(taken) > 0).all() and taken[-1] - taken[0] < 20


def test_short_sequences_are_tiled():
    rng = np.random.default_rng(1)
    starts = set()
    for _ in range(200):
        clip = augment.sample_clip(_numbered(5), rng, window=20, keep=16)
        assert clip.shape == (16, 64, 44) and set(clip[:, 0, 0].tolist()) == set(range(5))
        starts.add(int(clip[0, 0, 0]))
    assert len(starts) > 1


def test_augment_output_shape_dtype_and_range():
    rng = np.random.default_rng(2)
    seq = random_masks(rng, 40)
    for _ in range(50):
        view = augment.augment_clip(augment.sample_clip(seq, rng, RECIPE.window, RECIPE.frames), rng)
        assert view.shape == (16, 64, 44) and view.dtype == np.float32 and view.flags.c_contiguous
        assert view.min() >= 0.0 and view.max() <= 1.0


def test_same_seed_same_views_and_the_two_views_differ():
    seq = random_masks(np.random.default_rng(3), 60)
    a1, b1 = augment.two_views(seq, np.random.default_rng(42))
    a2, b2 = augment.two_views(seq, np.random.default_rng(42))
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2)
    assert not np.array_equal(a1, b1)
    assert not np.array_equal(a1, augment.two_views(seq, np.random.default_rng(43))[0])


def test_with_everything_off_it_only_scales():
    clip = random_masks(np.random.default_rng(4), 16)
    assert np.array_equal(
        augment.augment_clip(clip, np.random.default_rng(0), only()), clip / np.float32(255)
    )


def test_flip_mirrors_every_frame():
    clip = random_masks(np.random.default_rng(5), 16)
    out = augment.augment_clip(clip, np.random.default_rng(0), only("p_flip"))
    assert np.array_equal(out, clip[:, :, ::-1] / np.float32(255))
    assert not np.array_equal(out, clip / np.float32(255))


def test_band_dilation_only_grows_foreground_inside_the_band():
    clip = random_masks(np.random.default_rng(6), 16)
    base = clip / np.float32(255)
    out = augment.augment_clip(clip, np.random.default_rng(0), only("p_dilate"))
    changed_rows = np.flatnonzero((out != base).any(axis=(0, 2)))
    assert changed_rows.size and changed_rows.min() >= 9 and changed_rows.max() < 50
    assert (out >= base).all()


def test_band_blur_leaves_a_binary_band():
    clip = (np.random.default_rng(7).random((16, 64, 44)) < 0.3).astype(np.uint8) * 255
    out = augment.augment_clip(clip, np.random.default_rng(0), only("p_blur"))
    assert set(np.unique(out).tolist()) <= {0.0, 1.0}
    assert np.array_equal(out[:, :9], clip[:, :9] / np.float32(255))  # rows above the band untouched
    assert np.array_equal(out[:, 50:], clip[:, 50:] / np.float32(255))


@pytest.mark.parametrize("name", ["p_affine", "p_perspective"])
def test_warps_move_the_silhouette_the_same_way_in_every_frame(name):
    config = only(name)
    frame = random_masks(np.random.default_rng(8), 1)
    clip = np.repeat(frame, 16, axis=0)  # 16 identical frames must stay identical: one draw per clip
    moved = 0
    for seed in range(5):
        out = augment.augment_clip(clip, np.random.default_rng(seed), config)
        assert (out == out[:1]).all()
        moved += not np.array_equal(out[0], frame[0] / np.float32(255))
    assert moved >= 4


def test_bad_input_is_a_sequence_error():
    rng = np.random.default_rng(0)
    with pytest.raises(SequenceError):
        augment.sample_clip(np.zeros((0, 64, 44), np.uint8), rng, 20, 16)
    with pytest.raises(SequenceError):
        augment.augment_clip(np.zeros((16, 64, 44), np.float32), rng)
    with pytest.raises(SequenceError, match="at most"):
        augment.augment_clip(np.zeros((augment.MAX_CLIP_FRAMES + 1, 64, 44), np.uint8), rng)


def test_augment_does_not_import_torch():
    code = "import sys, train.augment; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

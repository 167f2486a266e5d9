"""Alignment and cutting (OpenGait pretreatment): properties that must hold for any person blob."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gaitlu.errors import SequenceError
from gaitlu.preprocess import (
    ALIGNED_WIDTH,
    CUT,
    FRAME_HEIGHT,
    MODEL_WIDTH,
    align_frame,
    align_sequence,
    drop_empty_frames,
    to_float,
    to_model_frames,
)

FAST = settings(max_examples=50, deadline=None)


def half_mass_column(frame: np.ndarray) -> int:
    """First column where the cumulative foreground mass passes half: the alignment's centre definition."""
    cumulative = frame.sum(axis=0, dtype=np.int64).cumsum()
    return int(np.searchsorted(cumulative, cumulative[-1] / 2, side="right"))


@st.composite
def person_blobs(draw: st.DrawFn, min_aspect: float = 0.0) -> np.ndarray:
    """A filled ellipse or rectangle filling an (h, w) uint8 canvas, taller than wide as people are."""
    h = draw(st.integers(16, 300))
    w = draw(st.integers(max(4, round(h * min_aspect)), h))
    blob = np.zeros((h, w), np.uint8)
    if draw(st.booleans()):
        blob[:] = 255
    else:
        cv2.ellipse(blob, (((w - 1) / 2, (h - 1) / 2), (w, h), 0), 255, thickness=-1)
    return blob


@st.composite
def placed(draw: st.DrawFn, blob: np.ndarray) -> np.ndarray:
    """`blob` pasted at a random position into a random-size frame that holds it."""
    h, w = blob.shape
    frame = np.zeros((draw(st.integers(h, h + 200)), draw(st.integers(w, w + 300))), np.uint8)
    top = draw(st.integers(0, frame.shape[0] - h))
    left = draw(st.integers(0, frame.shape[1] - w))
    frame[top : top + h, left : left + w] = blob
    return frame


@st.composite
def raw_frames(draw: st.DrawFn, min_aspect: float = 0.0) -> np.ndarray:
    return draw(placed(draw(person_blobs(min_aspect))))


# People are at least ~1/5 as wide as tall. Thinner slivers can lose a one-pixel tip to cubic resampling
# (OpenGait's too), so the full-height check would not hold for them.
PERSON_ASPECT = 0.2


@FAST
@given(raw_frames(min_aspect=PERSON_ASPECT))
def test_aligned_person_spans_full_height_and_is_centred_at_column_32(frame: np.ndarray) -> None:
    aligned = align_frame(frame)
    assert aligned is not None
    assert aligned.shape == (FRAME_HEIGHT, ALIGNED_WIDTH) and aligned.dtype == np.uint8
    assert aligned[0].any() and aligned[-1].any()  # head on the top row, feet on the bottom row
    assert abs(half_mass_column(aligned) - ALIGNED_WIDTH // 2) <= 1


@FAST
@given(st.data())
def test_alignment_does_not_depend_on_where_the_person_stands(data: st.DataObject) -> None:
    blob = data.draw(person_blobs())
    first, second = data.draw(placed(blob)), data.draw(placed(blob))
    np.testing.assert_array_equal(align_frame(first), align_frame(second))


@FAST
@given(raw_frames())
def test_model_frames_keep_the_centre_at_column_22(frame: np.ndarray) -> None:
    assume(frame.shape not in ((FRAME_HEIGHT, ALIGNED_WIDTH), (FRAME_HEIGHT, MODEL_WIDTH)))  # not raw sizes
    model = to_model_frames(frame[None])
    assert model.shape == (1, FRAME_HEIGHT, MODEL_WIDTH)
    np.testing.assert_array_equal(model[0], align_frame(frame)[:, CUT : CUT + MODEL_WIDTH])
    # A person narrower than the 44 kept columns loses nothing to the cut: the centre moves by CUT only.
    if np.count_nonzero(align_frame(frame).any(axis=0)) <= MODEL_WIDTH - 2:
        assert abs(half_mass_column(model[0]) - (ALIGNED_WIDTH // 2 - CUT)) <= 1


@FAST
@given(st.data())
def test_empty_frames_are_dropped_and_order_kept(data: st.DataObject) -> None:
    blobs = data.draw(st.lists(person_blobs(), min_size=1, max_size=4))
    size = (max(b.shape[0] for b in blobs) + 10, max(b.shape[1] for b in blobs) + 10)
    frames, expected = [], []
    for blob in blobs:
        for _ in range(data.draw(st.integers(0, 2))):
            frames.append(np.zeros(size, np.uint8))
        frame = np.zeros(size, np.uint8)
        frame[: blob.shape[0], : blob.shape[1]] = blob
        frames.append(frame)
        expected.append(align_frame(frame))
    np.testing.assert_array_equal(align_sequence(np.stack(frames)), np.stack(expected))


@FAST
@given(st.integers(1, 5), st.sampled_from([ALIGNED_WIDTH, MODEL_WIDTH]), st.integers(0, 2**32 - 1))
def test_aligned_and_cut_sizes_pass_through_without_realignment(t: int, width: int, seed: int) -> None:
    seq = np.random.default_rng(seed).integers(0, 256, (t, FRAME_HEIGHT, width), dtype=np.uint8)
    seq[0] = 0  # an empty frame is kept: these sizes are never re-aligned
    out = to_model_frames(seq)
    np.testing.assert_array_equal(out, seq[:, :, CUT : CUT + MODEL_WIDTH] if width == ALIGNED_WIDTH else seq)
    assert out.flags.c_contiguous


def test_empty_and_tiny_frames_have_no_alignment() -> None:
    assert align_frame(np.zeros((128, 88), np.uint8)) is None
    speck = np.zeros((128, 88), np.uint8)
    speck[60:66, 40:46] = 255  # 36 pixels: below OpenGait's pixel-sum threshold
    assert align_frame(speck) is None
    pole = np.zeros((300, 88), np.uint8)
    pole[:, 40] = 255  # bright enough, but 1/300 as wide as tall: under one pixel wide at height 64
    assert align_frame(pole) is None


def test_all_empty_sequence_is_an_error() -> None:
    with pytest.raises(SequenceError, match="none of the 3 frames"):
        align_sequence(np.zeros((3, 100, 80), np.uint8))


def test_wrong_input_types_are_errors_not_tracebacks() -> None:
    with pytest.raises(SequenceError, match="uint8"):
        to_model_frames(np.zeros((2, 64, 44), np.float32))
    with pytest.raises(SequenceError, match="uint8"):
        to_model_frames(np.zeros((64, 44), np.uint8))
    with pytest.raises(SequenceError, match="one \\(H, W\\) mask"):
        align_frame(np.zeros((2, 64, 44), np.uint8))
    with pytest.raises(SequenceError, match="uint8"):
        to_float(np.zeros((1, 64, 44), np.float32))


def test_to_float_scales_to_unit_range() -> None:
    seq = np.array([[[0, 51, 255]]], np.uint8)
    out = to_float(seq)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[[0.0, 0.2, 1.0]]], rtol=0, atol=1e-7)


def _opengait_reference(frame: np.ndarray) -> np.ndarray:
    """OpenGait's datasets/pretreatment.py as described in docs/gaitssb.md: full-width resize, then centre."""
    rows = np.flatnonzero(frame.any(axis=1))
    person = frame[rows[0] : rows[-1] + 1]
    resized = cv2.resize(
        person, (int(64 * person.shape[1] / person.shape[0]), 64), interpolation=cv2.INTER_CUBIC
    )
    centre = half_mass_column(resized)
    padded = np.pad(resized, ((0, 0), (32, 32)))
    return padded[:, centre : centre + 64]


def _within(a: np.ndarray, b: np.ndarray, pixels: int) -> bool:
    """Every foreground pixel of `a` lies within `pixels` (chessboard distance) of foreground in `b`."""
    near_b = cv2.dilate(b.astype(np.uint8), np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)) > 0
    return not (a & ~near_b).any()


@FAST
@given(raw_frames(min_aspect=PERSON_ASPECT))
def test_matches_opengait_pretreatment_up_to_resampling(frame: np.ndarray) -> None:
    # Resampling grids differ by a sub-pixel phase (we resize the person's box, OpenGait the full width),
    # which moves outlines by at most 2 pixels in 64.
    ours, reference = align_frame(frame) > 127, _opengait_reference(frame) > 127
    assert _within(ours, reference, 2) and _within(reference, ours, 2)


# ----- absurd person boxes: dropped cheaply, and named when nothing is left


def test_a_sequence_of_flat_strips_is_refused_naming_the_box_without_resizing_it() -> None:
    strips = np.full((720, 1, 4096), 255, np.uint8)  # a 3 KB .npz: each frame once took ~0.1 s
    with pytest.raises(SequenceError, match=r"none of the 720 frames.*720 have a person box under 16 px tall "
                       r"\(e\.g\. 1x4096 px\)"):  # fmt: skip
        align_sequence(strips)
    bands = np.full((720, 16, 4096), 255, np.uint8)
    with pytest.raises(
        SequenceError, match=r"720 have a person box over 4x wider than tall \(e\.g\. 16x4096"
    ):
        align_sequence(bands)


def test_boxes_too_short_or_too_flat_are_dropped_and_the_rest_kept() -> None:
    frames = np.zeros((4, 600, 800), np.uint8)
    frames[0, 100:400, 300:420] = 255  # a 300 x 120 walker: kept
    frames[1, 200:216, 0:800] = 255  # a 16 x 800 band: too flat
    frames[2, 50:62, 50:62] = 255  # a 12 x 12 speck, bright enough to pass the pixel-sum test: too short
    frames[3, 100:400, 300:420] = 255
    aligned = align_sequence(frames)
    assert aligned.shape == (2, FRAME_HEIGHT, ALIGNED_WIDTH)
    np.testing.assert_array_equal(aligned[0], aligned[1])
    with pytest.raises(SequenceError, match=r"1 have a person box over 4x.*1 have a person box under 16 px"):
        align_sequence(frames[1:3])


def test_the_widest_allowed_box_stays_cheap() -> None:
    band = np.zeros((1, 600, 2400), np.uint8)
    band[0, 100:400, 0:1200] = 255  # exactly 4x wider than tall: kept, resized to 64 x 256
    assert align_frame(band[0]) is not None


def test_drop_empty_frames_keeps_the_silhouettes_and_counts_what_is_left():
    frames = np.zeros((6, 64, 44), np.uint8)
    frames[[1, 4], 10:50, 15:30] = 255  # two frames with a person
    frames[2, 0, 0] = 255  # a speck: empty by OpenGait's rule (pixel sum <= 10000)
    kept = drop_empty_frames(frames)
    assert kept.shape == (2, 64, 44) and (kept == frames[[1, 4]]).all()
    unchanged = frames[[1, 4]]
    assert drop_empty_frames(unchanged) is unchanged  # nothing to drop: no copy
    with pytest.raises(SequenceError, match="has 2 non-empty frames of 6; at least 3 needed"):
        drop_empty_frames(frames, min_frames=3)
    with pytest.raises(SequenceError, match="has 0 non-empty frames of 30"):
        drop_empty_frames(np.zeros((30, 64, 44), np.uint8))

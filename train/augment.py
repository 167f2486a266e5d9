"""GaitSSB pretraining input: clip sampling and the per-clip augmentation (numpy + cv2 only).

This runs inside data-loader workers, so it must not import torch. Facts follow OpenGait's
`DA4GaitSSB` + `fixed_ordered` sampler (docs/gaitssb.md); the code is ours and vectorised: a clip
(F, H, W) is transposed to one (H, W, F) image whose channels are the frames, so every cv2 call
handles all frames of a clip at once (one augmentation draw per clip, as in the recipe).

Deliberate differences from OpenGait:
- Affine corner jitter uses the frame's true corners (OpenGait builds x from the height, which only
  matches square 64x64 frames).
- The horizontal flip is applied last: every later step (band dilation with symmetric kernels,
  3x3 Gaussian band blur) commutes with it, and this saves a copy. Random draws keep recipe order.
- Multi-channel cv2 warps round bilinear weights slightly differently from single-channel ones
  (at most a few grey levels at mask edges); irrelevant for augmentation.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from gaitlu.errors import SequenceError

WINDOW = 20  # consecutive frames a clip is drawn from
KEEP = 16  # frames kept from the window, in order
JITTER = 10  # corner jitter for affine and perspective, pixels (exclusive upper bound)
P_AFFINE, P_PERSPECTIVE, P_FLIP, P_DILATE, P_BLUR = 0.2, 0.2, 0.5, 0.2, 0.2
BAND_TOP = (9, 20)  # first band row drawn from this inclusive range
BAND_BOTTOM = (39, 50)  # band end row (exclusive) drawn from this inclusive range
BLUR_THRESHOLD = 0.2
MAX_CLIP_FRAMES = 128  # OpenCV 5 handles at most 128 channels in one call

# Dilation kernels: cv2 sizes are (width, height); all are left-right symmetric (see the flip note).
_KERNELS: tuple[np.ndarray, ...] = tuple(
    cv2.getStructuringElement(shape, size)
    for shape, sizes in (
        (cv2.MORPH_RECT, ((5, 3), (5, 5), (3, 5))),
        (cv2.MORPH_CROSS, ((3, 3), (3, 5), (5, 3))),
        (cv2.MORPH_ELLIPSE, ((3, 3), (3, 5), (5, 3))),
    )
    for size in sizes
)


def _check_sequence(seq: np.ndarray) -> None:
    if not isinstance(seq, np.ndarray) or seq.dtype != np.uint8 or seq.ndim != 3 or seq.shape[0] == 0:
        shape = getattr(seq, "shape", None)
        dtype = getattr(seq, "dtype", type(seq).__name__)
        raise SequenceError(f"expected a non-empty uint8 (T, H, W) sequence, got {dtype} {shape}")


def sample_clip(
    seq: np.ndarray, rng: np.random.Generator, window: int = WINDOW, keep: int = KEEP
) -> np.ndarray:
    """Pick `window` consecutive frames at random (tiling a short sequence) and keep `keep` in order.

    Returns a new (keep, H, W) uint8 array.
    """
    _check_sequence(seq)
    if not 0 < keep <= window:
        raise SequenceError(f"need 0 < keep <= window, got keep={keep} window={window}")
    frames = seq.shape[0]
    tiled = frames * math.ceil(window / frames)  # length after tiling, >= window
    start = int(rng.integers(0, tiled - window + 1))
    chosen = np.sort(rng.choice(window, size=keep, replace=False)) + start
    return seq[chosen % frames]  # (keep, H, W)


def _random_affine(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Three corners each jittered inwards by up to JITTER px, mapped to three other jittered corners."""
    h, w = img.shape[:2]
    corners = np.array([[0, 0], [w, 0], [0, h]], dtype=np.float32)
    inward = np.array([[1, 1], [-1, 1], [1, -1]], dtype=np.float32)
    src, dst = (corners + inward * rng.integers(0, JITTER, size=(3, 2)) for _ in range(2))
    matrix = cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32))
    return cv2.warpAffine(img, matrix, (w, h)).reshape(img.shape)


def _random_perspective(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map a quad whose corners sit up to JITTER px inside the left/right edges onto the whole frame."""
    h, w = img.shape[:2]
    left_top, right_top, right_bottom, left_bottom = rng.integers(0, JITTER, size=4)
    src = np.float32([[left_top, 0], [w - right_top, 0], [w - right_bottom, h], [left_bottom, h]])
    canvas = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    matrix = cv2.getPerspectiveTransform(src, canvas)
    return cv2.warpPerspective(img, matrix, (w, h)).reshape(img.shape)


def _band(rng: np.random.Generator) -> slice:
    top = int(rng.integers(BAND_TOP[0], BAND_TOP[1] + 1))
    bottom = int(rng.integers(BAND_BOTTOM[0], BAND_BOTTOM[1] + 1))
    return slice(top, bottom)


def augment_clip(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """GaitSSB augmentation, one draw for all frames of the clip: uint8 (F, H, W) -> float32 in [0, 1]."""
    _check_sequence(clip)
    if clip.shape[0] > MAX_CLIP_FRAMES:
        raise SequenceError(f"a clip has at most {MAX_CLIP_FRAMES} frames, got {clip.shape[0]}")
    img = np.ascontiguousarray(clip.transpose(1, 2, 0))  # (H, W, F): frames become cv2 channels
    if rng.random() < P_AFFINE:
        img = _random_affine(img, rng)
    if rng.random() < P_PERSPECTIVE:
        img = _random_perspective(img, rng)
    out = img.astype(np.float32)
    out *= np.float32(1.0 / 255.0)
    flip = rng.random() < P_FLIP
    if rng.random() < P_DILATE:
        rows = _band(rng)
        kernel = _KERNELS[int(rng.integers(len(_KERNELS)))]
        out[rows] = cv2.dilate(out[rows], kernel).reshape(out[rows].shape)
    if rng.random() < P_BLUR:
        rows = _band(rng)
        blurred = cv2.GaussianBlur(out[rows], (3, 3), 0).reshape(out[rows].shape)
        out[rows] = blurred > BLUR_THRESHOLD
    if flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out.transpose(2, 0, 1))  # (F, H, W)


def two_views(seq: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two independently sampled and augmented (KEEP, H, W) float32 clips of one sequence."""
    return (augment_clip(sample_clip(seq, rng), rng), augment_clip(sample_clip(seq, rng), rng))

"""GaitSSB pretraining input: clip sampling and the per-clip augmentation (numpy + cv2 only).

This runs inside data-loader workers, so it must not import torch. Every setting is a field of
`AugmentConfig` (the `augment` section of a pretraining YAML), so it reaches the saved config. Facts
follow OpenGait's `DA4GaitSSB` + `fixed_ordered` sampler (the recipe: docs/training.md); the code is
ours and vectorised: a clip (F, H, W) is transposed to one (H, W, F) image whose channels are the
frames, so every cv2 call handles all frames of a clip at once (one augmentation draw per clip).

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
from typing import Any

import cv2
import numpy as np

from gaitlu.errors import ConfigError, SequenceError
from train.config import ConfigModel, Ints

MAX_CLIP_FRAMES = 128  # OpenCV 5 handles at most 128 channels in one call
FRAME_HEIGHT = 64  # model frames are 64 x 44


class AugmentConfig(ConfigModel):
    """How each training clip is drawn and augmented: the `augment` section of a pretraining config.

    Defaults are the GaitSSB recipe. Saved with the resolved config in every checkpoint, and part of
    what a resume must match (it shapes the data stream).
    """

    window: int = 20  # consecutive frames a clip is drawn from (a short sequence is tiled)
    frames: int = 16  # frames kept from the window, in order
    jitter: int = 10  # corner jitter of the affine and perspective warps, pixels (exclusive bound)
    p_affine: float = 0.2
    p_perspective: float = 0.2
    p_flip: float = 0.5
    p_dilate: float = 0.2  # dilate a horizontal body band (simulates clothing)
    p_blur: float = 0.2  # blur that band, then threshold
    band_top: Ints = (9, 20)  # the band's first row is drawn from this inclusive range
    band_bottom: Ints = (39, 50)  # its end row (exclusive) from this inclusive range
    blur_threshold: float = 0.2

    def model_post_init(self, context: Any, /) -> None:
        if not 0 < self.frames <= self.window:
            raise ConfigError(
                f"augment needs 0 < frames <= window, got frames={self.frames} window={self.window}"
            )
        if self.frames > MAX_CLIP_FRAMES:
            raise ConfigError(f"augment.frames is at most {MAX_CLIP_FRAMES}, got {self.frames}")
        if self.jitter < 1:
            raise ConfigError(f"augment.jitter must be at least 1 pixel, got {self.jitter}")
        for name in ("p_affine", "p_perspective", "p_flip", "p_dilate", "p_blur", "blur_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"augment.{name} must be in [0, 1], got {getattr(self, name)}")
        top, bottom = self.band_top, self.band_bottom
        if (
            len(top) != 2
            or len(bottom) != 2
            or not 0 <= top[0] <= top[1] < bottom[0] <= bottom[1] <= FRAME_HEIGHT
        ):
            raise ConfigError(
                f"augment.band_top {list(top)} and band_bottom {list(bottom)} must be [low, high] row ranges "
                f"with the top range above the bottom one, within the {FRAME_HEIGHT} rows of a frame"
            )


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


def sample_clip(seq: np.ndarray, rng: np.random.Generator, window: int, keep: int) -> np.ndarray:
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
    clip: np.ndarray = seq[chosen % frames]  # (keep, H, W)
    return clip


def _random_affine(img: np.ndarray, rng: np.random.Generator, jitter: int) -> np.ndarray:
    """Three corners each jittered inwards by up to `jitter` px, mapped to three other jittered corners."""
    h, w = img.shape[:2]
    corners = np.array([[0, 0], [w, 0], [0, h]], dtype=np.float32)
    inward = np.array([[1, 1], [-1, 1], [1, -1]], dtype=np.float32)
    src, dst = (corners + inward * rng.integers(0, jitter, size=(3, 2)) for _ in range(2))
    matrix = cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32))
    return cv2.warpAffine(img, matrix, (w, h)).reshape(img.shape)


def _random_perspective(img: np.ndarray, rng: np.random.Generator, jitter: int) -> np.ndarray:
    """Map a quad whose corners sit up to `jitter` px inside the left/right edges onto the whole frame."""
    h, w = img.shape[:2]
    left_top, right_top, right_bottom, left_bottom = rng.integers(0, jitter, size=4)
    src = np.array([[left_top, 0], [w - right_top, 0], [w - right_bottom, h], [left_bottom, h]], np.float32)
    canvas = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, canvas)
    return cv2.warpPerspective(img, matrix, (w, h)).reshape(img.shape)


def _band(rng: np.random.Generator, config: AugmentConfig) -> slice:
    top = int(rng.integers(config.band_top[0], config.band_top[1] + 1))
    bottom = int(rng.integers(config.band_bottom[0], config.band_bottom[1] + 1))
    return slice(top, bottom)


def augment_clip(
    clip: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()
) -> np.ndarray:
    """GaitSSB augmentation, one draw for all frames of the clip: uint8 (F, H, W) -> float32 in [0, 1]."""
    _check_sequence(clip)
    if clip.shape[0] > MAX_CLIP_FRAMES:
        raise SequenceError(f"a clip has at most {MAX_CLIP_FRAMES} frames, got {clip.shape[0]}")
    img = np.ascontiguousarray(clip.transpose(1, 2, 0))  # (H, W, F): frames become cv2 channels
    if rng.random() < config.p_affine:
        img = _random_affine(img, rng, config.jitter)
    if rng.random() < config.p_perspective:
        img = _random_perspective(img, rng, config.jitter)
    out = img.astype(np.float32)
    out *= np.float32(1.0 / 255.0)
    flip = rng.random() < config.p_flip
    if rng.random() < config.p_dilate:
        rows = _band(rng, config)
        kernel = _KERNELS[int(rng.integers(len(_KERNELS)))]
        out[rows] = cv2.dilate(out[rows], kernel).reshape(out[rows].shape)
    if rng.random() < config.p_blur:
        rows = _band(rng, config)
        blurred = cv2.GaussianBlur(out[rows], (3, 3), 0).reshape(out[rows].shape)
        out[rows] = blurred > config.blur_threshold
    if flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out.transpose(2, 0, 1))  # (F, H, W)


def two_views(
    seq: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Two independently sampled and augmented (frames, H, W) float32 clips of one sequence."""
    view_a = augment_clip(sample_clip(seq, rng, config.window, config.frames), rng, config)
    view_b = augment_clip(sample_clip(seq, rng, config.window, config.frames), rng, config)
    return view_a, view_b

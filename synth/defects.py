"""Segmentation defects of real background subtraction, applied to the walker's clean masks.

Real CASIA-B silhouettes are not clean renders: the edge wanders with the blur and threshold of the
background model; clothes of the background's colour leave holes in the torso or a leg that persist
while the person walks; a shadow at the feet joins the silhouette; hair against a dark background
frays the head; single frames pick up a blob or lose a patch. Each sequence draws its own mix, so
a model trained on the walker meets all of them (docs/realism-log.md says what each changed).
"""

from __future__ import annotations

import cv2
import numpy as np

NOISE_CELL = 6  # pixels per cell of the edge-threshold field (divides the 90x72 dataset canvas)
P_CAMOUFLAGE = 0.4  # sequences with clothes partly the colour of the background
P_SHADOW = 0.15  # sequences whose foot shadow is segmented as foreground
P_RAGGED_HEAD = 0.3  # sequences whose head outline frays
P_FRAME_DEFECT = 0.12  # frames with one blob stuck on or one patch missing


def ragged_edges(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The edge is where a blurred mask crosses a threshold that wanders over the image and in time."""
    n_frames, height, width = masks.shape
    cell = NOISE_CELL
    tall = masks.reshape(n_frames * height, width)  # (T*H, W): one image, frames stacked vertically
    soft = cv2.GaussianBlur(tall, (0, 0), height / 160)
    coarse = rng.normal(0.0, 25.0, size=(n_frames, height // cell, width // cell))  # (T, H/c, W/c)
    coarse += rng.normal(0.0, 20.0, size=(n_frames, 1, 1))  # whole-frame thickness jitter
    cells = np.clip(127.0 - coarse, 1, 254).astype(np.uint8).reshape(-1, width // cell)
    threshold = cv2.resize(cells, (width, n_frames * height), interpolation=cv2.INTER_LINEAR)
    return cv2.compare(soft, threshold, cv2.CMP_GT).reshape(n_frames, height, width)  # 0 / 255


def _smooth_field(
    rng: np.random.Generator, n_frames: int, shape: tuple[int, int], cells: tuple[int, int]
) -> np.ndarray:
    """(T, H, W) float field in about [-1, 1]: a coarse random grid, upsampled, drifting slowly in time."""
    a, b = rng.normal(size=(2, *cells)).astype(np.float32)
    w = np.linspace(0.0, 1.0, n_frames, dtype=np.float32)[:, None, None]
    mix = np.cos(0.5 * np.pi * w) * a + np.sin(0.5 * np.pi * w) * b  # (T, ch, cw), unit variance throughout
    return np.stack([cv2.resize(m, shape[::-1], interpolation=cv2.INTER_CUBIC) for m in mix])


def camouflage(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Holes where clothes match the background: a smooth field attached to the (tracked) body cuts a few
    percent out of a band of rows (upper body or legs), the same region through the whole walk."""
    n_frames, height, width = masks.shape
    field = _smooth_field(rng, n_frames, (height, width), (int(rng.integers(4, 9)), int(rng.integers(3, 7))))
    top = rng.uniform(0.15, 0.6) * height
    band = (np.arange(height) >= top) & (np.arange(height) < top + rng.uniform(0.15, 0.4) * height)
    cut = (field > rng.uniform(0.8, 1.6)) & band[None, :, None]
    out = masks.copy()
    out[cut] = 0
    return out


def foot_shadow(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A flat shadow joined to the feet: a thin ellipse on the ground line, off to one side."""
    out = masks.copy()
    height = masks.shape[1]
    spread, thick = rng.uniform(0.03, 0.12) * height, rng.uniform(0.01, 0.02) * height
    shift = rng.uniform(-0.6, 0.6) * spread
    for frame in out:
        rows = np.flatnonzero(frame.any(axis=1))
        if len(rows) == 0:
            continue
        bottom = rows[-1]
        cols = np.flatnonzero(frame[max(bottom - 2, 0) : bottom + 1].any(axis=0))
        centre = (int(0.5 * (cols[0] + cols[-1]) + shift), int(bottom - thick / 2))
        half = (int(0.5 * (cols[-1] - cols[0]) + spread / 2), max(1, int(thick)))
        cv2.ellipse(frame, centre, half, 0.0, 0, 360, 255, -1)
    return out


def ragged_head(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Frayed hair: small notches and holes in the top tenth of the silhouette in many frames."""
    out = masks.copy()
    for t in np.flatnonzero(rng.random(len(out)) < 0.5):
        frame = out[t]
        rows = np.flatnonzero(frame.any(axis=1))
        if len(rows) == 0:
            continue
        top, size = rows[0], rows[-1] - rows[0]
        ys, xs = np.nonzero(frame[top : top + max(2, size // 10)])
        for i in rng.integers(len(ys), size=int(rng.integers(1, 4))):
            radius = int(rng.integers(1, max(2, size // 40) + 1))
            cv2.circle(frame, (int(xs[i]), int(top + ys[i])), radius, 0, -1)
    return out


def frame_defects(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One blob stuck to the body or one hole in it, in a few single frames."""
    out = masks.copy()
    height = masks.shape[1]
    for t in np.flatnonzero(rng.random(len(out)) < P_FRAME_DEFECT):
        ys, xs = np.nonzero(out[t])
        if len(ys) == 0:
            continue
        i = rng.integers(len(ys))
        axes = (int(rng.integers(1, height // 24 + 2)), int(rng.integers(1, height // 24 + 2)))
        colour = 0 if rng.random() < 0.5 else 255
        cv2.ellipse(out[t], (int(xs[i]), int(ys[i])), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    return out


def segmentation_noise(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Clean (T, H, W) 0/255 masks -> what a background subtractor would have made of them."""
    out = masks
    if rng.random() < P_SHADOW:
        out = foot_shadow(out, rng)
    out = ragged_edges(out, rng)
    if rng.random() < P_CAMOUFLAGE:
        out = camouflage(out, rng)
    if rng.random() < P_RAGGED_HEAD:
        out = ragged_head(out, rng)
    return frame_defects(out, rng)

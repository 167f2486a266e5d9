"""Synthetic walking-person videos with ground-truth masks, for tests and benchmarks of the extractor.

The synthetic walker (`synth.render_raw`, fixed camera, crossing the view) is composited over a
procedural static background and encoded with OpenCV, so extraction is measured on real decoded video
(compression artefacts included) against the exact masks that made it. What makes it not trivial:
textured backgrounds (gradients, low-frequency noise, shapes, grain), clothes whose colours are drawn
near the background's (some cases low contrast), a soft cast shadow next to the feet (the ground truth
excludes it, as a shadow is not the person), global lighting drift and flicker, per-pixel camera noise
and sub-pixel camera jitter.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from synth import Identity, render_raw, sample_identity
from video.extract import Track

logger = logging.getLogger(__name__)

FPS = 25.0
FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}  # all written and read back by this build


@dataclass(frozen=True)
class Walker:
    """One person in a synthetic scene: who, seen from where, and when (frames [start, stop))."""

    identity: Identity
    view_deg: float = 90.0
    condition: str = "nm"
    start: int = 0
    stop: int | None = None  # None: to the end of the video
    region: tuple[float, float] = (0.0, 1.0)  # horizontal slice of the canvas the walk is fitted into


@dataclass(frozen=True)
class SyntheticVideo:
    path: Path
    masks: np.ndarray  # (P, T, H, W) uint8 0/255 ground truth, one stack per walker (zero outside its frames)
    frame_ranges: list[tuple[int, int]]  # per walker, [start, stop)
    scene: np.ndarray  # (H, W, 3) uint8 BGR: the empty scene, before lighting and camera noise

    @property
    def union(self) -> np.ndarray:
        """(T, H, W) ground truth of everyone in view."""
        return self.masks.max(axis=0)


def textured_background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A static scene (H, W, 3) float32 in 0..255: gradient + low-frequency noise + shapes + grain."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)  # (H, W) each
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy  # (H, W), a linear gradient in a random direction
    c0, c1 = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    image = c0 + (c1 - c0) * ((ramp - ramp.min()) / np.ptp(ramp))[..., None]  # (H, W, 3)
    coarse = rng.normal(0, 18, (6, 8, 3)).astype(np.float32)
    image += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    scale = max(height, width) / 320
    for _ in range(int(rng.integers(6, 14))):
        colour = tuple(float(c) for c in rng.uniform(20, 235, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.uniform(6, 40) * scale)
        if rng.random() < 0.5:
            cv2.rectangle(image, (x, y), (x + r, y + int(r * rng.uniform(0.3, 2))), colour, -1, cv2.LINE_AA)
        else:
            cv2.circle(image, (x, y), r, colour, -1, cv2.LINE_AA)
    image = cv2.GaussianBlur(image, (0, 0), 0.8 * scale)
    image += rng.normal(0, 6, (height, width, 1)).astype(np.float32)  # fixed grain: texture, not noise
    return np.clip(image, 0, 255)


def flat_background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """One uniform colour (H, W, 3) float32: the scene the ONNX test model knows."""
    return np.broadcast_to(rng.uniform(60, 190, 3).astype(np.float32), (*size, 3)).copy()


def _clothes(rng: np.random.Generator, scene_mean: np.ndarray, low_contrast: bool) -> np.ndarray:
    """(3, 3) colours for head, upper and lower body: near the scene's mean colour when low_contrast."""
    offset = 22.0 if low_contrast else 60.0
    signs = rng.choice([-1.0, 1.0], size=(3, 3))
    colours = scene_mean + signs * rng.uniform(offset, 1.6 * offset, (3, 3))
    # Pushed past the clip range a colour would lose its contrast: flip the sign of what overflows.
    colours = np.where((colours < 10) | (colours > 245), scene_mean - signs * offset, colours)
    return np.clip(colours, 10, 245).astype(np.float32)


def _shadow(mask: np.ndarray, strength: float) -> np.ndarray:
    """(H, W) float32 darkening factor of a soft shadow cast on the ground from the feet, sideways."""
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return np.ones(mask.shape, np.float32)
    foot = float(rows[-1])
    # Flip about the foot line, squash to a fifth and shear sideways: y' = foot + (foot - y) / 5 ...
    warp = np.float32([[1, -0.6, 0.6 * foot], [0, -0.2, 1.2 * foot]])
    cast = cv2.warpAffine(mask, warp, mask.shape[::-1], flags=cv2.INTER_LINEAR).astype(np.float32) / 255
    cast = cv2.GaussianBlur(cast, (0, 0), 1.5)
    return 1.0 - strength * cast


def compose_frames(
    scene: np.ndarray,
    masks: np.ndarray,
    rng: np.random.Generator,
    *,
    low_contrast: bool = False,
    shadows: bool = True,
    noise: float = 3.0,
) -> np.ndarray:
    """Scene (H, W, 3) + per-walker masks (P, T, H, W) -> (T, H, W, 3) uint8 BGR frames of the video."""
    n_people, n_frames, height, width = masks.shape
    clothes = [_clothes(rng, scene.reshape(-1, 3).mean(0), low_contrast) for _ in range(n_people)]
    weave = rng.normal(0, 10, (height, width, 1)).astype(np.float32)  # cloth texture
    phase = rng.uniform(0, 2 * np.pi)
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    rows = np.arange(height, dtype=np.float32)[:, None]  # (H, 1)
    for t in range(n_frames):
        frame = scene.copy()
        for p in range(n_people):
            mask = masks[p, t]
            ys = np.flatnonzero(mask.any(axis=1))
            if len(ys) == 0:
                continue
            if shadows:
                frame *= _shadow(mask, 0.45)[..., None]
            top, bottom = ys[0], ys[-1]
            level = (rows - top) / max(bottom - top, 1)  # (H, 1): 0 at the head, 1 at the feet
            part = np.where(level < 0.13, 0, np.where(level < 0.5, 1, 2))  # head / upper / lower
            person = clothes[p][part[:, 0]][:, None, :] + weave  # (H, 1, 3) colours + (H, W, 1) weave
            inside = mask > 0
            frame[inside] = person[inside]
        gain = 1.0 + 0.04 * np.sin(2 * np.pi * t / 40 + phase) + rng.normal(0, 0.012)
        frame = frame * gain + rng.normal(0, noise, frame.shape).astype(np.float32)
        shift = np.float32([[1, 0, rng.normal(0, 0.25)], [0, 1, rng.normal(0, 0.25)]])
        frame = cv2.warpAffine(frame, shift, (width, height), borderMode=cv2.BORDER_REFLECT)
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def write_video(path: str | Path, frames: np.ndarray, fps: float = FPS) -> Path:
    """(T, H, W, 3) uint8 BGR -> a video file; the codec follows the suffix (.mp4/.mkv: mp4v, .avi: MJPG)."""
    path = Path(path)
    fourcc = FOURCC_BY_SUFFIX.get(path.suffix.lower())
    if fourcc is None:
        raise ValueError(f"{path}: write .mp4, .mkv or .avi")
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"this OpenCV build cannot write {fourcc} into {path.suffix}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return path


def render_walkers(
    walkers: Sequence[Walker], n_frames: int, size: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Ground truth (P, T, H, W) uint8 of every walker on the canvas, and their frame ranges."""
    height, width = size
    masks = np.zeros((len(walkers), n_frames, height, width), np.uint8)
    ranges = []
    for p, walker in enumerate(walkers):
        stop = n_frames if walker.stop is None else min(walker.stop, n_frames)
        x0, x1 = round(walker.region[0] * width), round(walker.region[1] * width)
        walk = render_raw(
            walker.identity, walker.view_deg, walker.condition, stop - walker.start, rng, (height, x1 - x0)
        )
        masks[p, walker.start : stop, :, x0:x1] = walk  # (T_p, H, w) into its frames and columns
        ranges.append((walker.start, stop))
    return masks, ranges


def make_video(
    path: str | Path,
    rng: np.random.Generator,
    *,
    walkers: Sequence[Walker] | None = None,
    n_frames: int = 50,
    size: tuple[int, int] = (240, 320),
    background: str = "texture",
    low_contrast: bool = False,
    shadows: bool = True,
    fps: float = FPS,
) -> SyntheticVideo:
    """Write a synthetic video of `walkers` (default: one random person in side view) and return its truth.

    `background`: "texture" (procedural scene) or "flat" (one colour); `size` is (H, W).
    """
    if walkers is None:
        walkers = [Walker(sample_identity(rng))]
    makers = {"texture": textured_background, "flat": flat_background}
    if background not in makers:
        raise ValueError(f"background must be one of {sorted(makers)}, got {background!r}")
    masks, ranges = render_walkers(walkers, n_frames, size, rng)
    scene = makers[background](rng, size)
    frames = compose_frames(
        scene, masks, rng, low_contrast=low_contrast, shadows=shadows and background != "flat"
    )
    written = write_video(path, frames, fps)
    logger.debug("wrote %s: %d frames of %s, %d walker(s)", written, n_frames, size, len(walkers))
    return SyntheticVideo(written, masks, ranges, np.clip(scene, 0, 255).astype(np.uint8))


def mask_iou(track: Track, truth: np.ndarray, work_size: tuple[int, int]) -> float:
    """Mean per-frame IoU of a track's raw masks (extracted with keep_masks) against ground truth (T, H, W),
    over the frames where the truth shows the person; a frame the track has no mask for counts as 0.
    Truth at another size than the working one is resized to it first."""
    if truth.shape[1:] != tuple(work_size):
        size = (work_size[1], work_size[0])
        truth = np.stack([cv2.resize(m, size, interpolation=cv2.INTER_AREA) for m in truth])
    gt = truth > 127
    pred = track.mask_canvas(len(truth), work_size) > 0
    shown = gt.any(axis=(1, 2))
    inter = (pred & gt).sum(axis=(1, 2))[shown]
    union = (pred | gt).sum(axis=(1, 2))[shown]
    return float(np.mean(inter / union))

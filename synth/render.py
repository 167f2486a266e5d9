"""Render a synthetic person walking, seen from a camera azimuth, as silhouette masks.

Azimuth convention (CASIA-B): 0 = the person walks towards the camera, 90 = side view (camera on the
person's right), 180 = walking away. The walker really travels along its path in front of a perspective
camera; `tracked=True` follows it like a person detector's crop (what the dataset frames use), while
`tracked=False` keeps the camera fixed so the walker crosses the canvas (for video).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from gaitlu.preprocess import align_sequence
from synth.body import pose
from synth.identity import Identity
from synth.mocap import FWD, LEFT, UP
from synth.motion import interpolate, sample_phases, vary_gait
from synth.outfit import adjust_angles, dressed_parts, sample_outfit
from synth.parts import Capsule, Part

FPS = 25.0  # CASIA-B's frame rate
ARC_POINTS = 6  # points per capsule end cap
SHIFT = 3  # cv2 fixed-point bits: sub-pixel polygon vertices
RAW_SIZE = (90, 72)  # dataset canvas (H, W); the person is about 72 px tall before alignment to 64
NOISE_CELL = 6  # pixels per cell of the segmentation-noise field (divides RAW_SIZE)

# (uv (T, 2) image coords, depth (T,), radius in metres) -> (pixels (T, 2), radius in pixels)
ToPixels = Callable[[np.ndarray, np.ndarray, float | np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Camera:
    position: np.ndarray  # (3,)
    axes: np.ndarray  # (3, 3) rows: image right, image up, viewing direction


def look_from(view_deg: float, distance: float, elevation_deg: float, target: np.ndarray) -> Camera:
    theta, elev = np.deg2rad(view_deg), np.deg2rad(elevation_deg)
    towards_camera = np.cos(theta) * FWD - np.sin(theta) * LEFT
    position = target + distance * (np.cos(elev) * towards_camera + np.sin(elev) * UP)
    look = (target - position) / np.linalg.norm(target - position)
    right = np.cross(look, UP)
    right /= np.linalg.norm(right)
    return Camera(position, np.stack([right, np.cross(right, look), look]))


def _project(cam: Camera, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3) world points -> (T, 2) image-plane coords (x right, y down, focal length 1), (T,) depth."""
    rel = (p - cam.position) @ cam.axes.T  # (T, 3) camera coordinates
    depth = rel[:, 2]
    return np.stack([rel[:, 0], -rel[:, 1]], axis=1) / depth[:, None], depth


def _capsule_polygon(a: np.ndarray, b: np.ndarray, ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """Outline of the convex hull of two discs: (T, 2) centres, (T,) radii -> (T, 2 * ARC_POINTS, 2)."""
    diff = b - a
    length = np.maximum(np.linalg.norm(diff, axis=1), 1e-9)
    heading = np.arctan2(diff[:, 1], diff[:, 0])
    # Outer tangents touch disc a at heading +- beta, where cos(beta) = (ra - rb) / length.
    beta = np.arccos(np.clip((ra - rb) / length, -1.0, 1.0))
    k = np.linspace(0.0, 1.0, ARC_POINTS)
    ang_a = heading[:, None] + beta[:, None] + (2 * np.pi - 2 * beta)[:, None] * k  # back arc of a
    ang_b = heading[:, None] - beta[:, None] + (2 * beta)[:, None] * k  # front arc of b
    pts_a = a[:, None] + ra[:, None, None] * np.stack([np.cos(ang_a), np.sin(ang_a)], axis=-1)
    pts_b = b[:, None] + rb[:, None, None] * np.stack([np.cos(ang_b), np.sin(ang_b)], axis=-1)
    return np.concatenate([pts_a, pts_b], axis=1)


def _polygons(parts: list[Part], cam: Camera, to_px: ToPixels) -> list[np.ndarray]:
    """Every part -> (T, V, 2) pixel polygons; `to_px(uv, depth, radius_m)` maps image coords to pixels."""
    out = []
    for part in parts:
        if isinstance(part, Capsule):
            (ua, da), (ub, db) = _project(cam, part.a), _project(cam, part.b)
            pa, ra = to_px(ua, da, part.ra)
            pb, rb = to_px(ub, db, part.rb)
            out.append(_capsule_polygon(pa, pb, ra, rb))
            continue
        sides = []
        for lv in part.levels:
            uv, depth = _project(cam, lv.centre)
            # Half-width seen along the image's horizontal axis of the ellipse a*axis, b*(up x axis).
            across = np.cross(UP, lv.axis)
            half = np.hypot(lv.a * (lv.axis @ cam.axes[0]), lv.b * (across @ cam.axes[0]))
            centre, half_px = to_px(uv, depth, half)
            sides.append((centre, half_px))
        for (c0, w0), (c1, w1) in itertools.pairwise(sides):
            dx0, dx1 = np.stack([w0, 0 * w0], 1), np.stack([w1, 0 * w1], 1)
            out.append(np.stack([c0 - dx0, c0 + dx0, c1 + dx1, c1 - dx1], axis=1))  # (T, 4, 2) quad
    return out


def _draw(polys: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    n_frames = polys[0].shape[0]
    canvas = np.zeros((n_frames, *size), np.uint8)
    fixed = [np.round(p * (1 << SHIFT)).astype(np.int32) for p in polys]
    for t in range(n_frames):
        frame = canvas[t]
        for p in fixed:
            cv2.fillConvexPoly(frame, p[t], 255, cv2.LINE_8, SHIFT)
    return canvas


def segmentation_noise(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Imperfect background subtraction: ragged edges, per-frame thickness jitter, holes and blobs.

    The edge is where a blurred mask crosses a threshold; the threshold wanders smoothly over the image
    (ragged edges) and from frame to frame (the silhouette grows and shrinks by about a pixel).
    """
    n_frames, height, width = masks.shape
    cell = NOISE_CELL
    tall = masks.reshape(n_frames * height, width)  # (T*H, W): one image, frames stacked vertically
    soft = cv2.GaussianBlur(tall, (0, 0), height / 160)
    coarse = rng.normal(0.0, 25.0, size=(n_frames, height // cell, width // cell))  # (T, H/c, W/c)
    coarse += rng.normal(0.0, 20.0, size=(n_frames, 1, 1))  # whole-frame thickness jitter
    cells = np.clip(127.0 - coarse, 1, 254).astype(np.uint8).reshape(-1, width // cell)
    threshold = cv2.resize(cells, (width, n_frames * height), interpolation=cv2.INTER_LINEAR)
    out = cv2.compare(soft, threshold, cv2.CMP_GT).reshape(n_frames, height, width)  # 0 / 255
    for t in np.flatnonzero(rng.random(n_frames) < 0.08):
        ys, xs = np.nonzero(out[t])
        if len(ys) == 0:
            continue
        i = rng.integers(len(ys))
        axes = (int(rng.integers(1, height // 24 + 2)), int(rng.integers(1, height // 24 + 2)))
        colour = 0 if rng.random() < 0.5 else 255  # a hole in the body or a blob stuck to it
        cv2.ellipse(out[t], (int(xs[i]), int(ys[i])), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    return out


def render_raw(
    identity: Identity,
    view_deg: float,
    condition: str,
    n_frames: int,
    rng: np.random.Generator,
    size: tuple[int, int] = RAW_SIZE,
    *,
    tracked: bool = False,
) -> np.ndarray:
    """Ground-truth (T, H, W) uint8 masks (0/255) of one walk at any canvas size, no segmentation noise.

    The per-walk variation (speed, style drift, bag or coat, start phase, camera distance, elevation and
    path offset) is drawn from rng.
    """
    body = identity.body
    gait = vary_gait(identity.gait, rng)
    outfit = sample_outfit(condition, rng)
    phases = sample_phases(gait, n_frames, FPS, rng)
    angles = adjust_angles(outfit, interpolate(gait.angles, phases))  # (T, S, 2)
    joints = pose(body, angles, interpolate(gait.pelvis, phases))
    speed = gait.stride * body.leg / gait.cycle_s
    travel = speed * np.arange(n_frames) / FPS
    path = (travel - travel.mean() + rng.uniform(-1.0, 1.0))[:, None] * FWD  # (T, 3)
    joints = {k: v if k.endswith("_axis") else v + path for k, v in joints.items()}
    distance = max(rng.uniform(4.0, 8.0), 0.5 * travel[-1] + 2.0)
    cam = look_from(view_deg, distance, rng.uniform(2.0, 14.0), 0.55 * body.height * UP)
    height_px, width_px = size
    if tracked:
        # Follow the pelvis and undo its distance, like a detector crop: only the body's shape is left.
        centre, depth0 = _project(cam, joints["pelvis"])
        scale = 0.8 * height_px / body.height
        anchor = np.array([width_px / 2, height_px * (0.1 + 0.8 * (1 - 0.53))])

        def to_px(
            uv: np.ndarray, depth: np.ndarray, radius: float | np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
            s = scale * depth0[:, None]
            return (uv - centre) * s + anchor, radius * scale * depth0 / depth

    else:
        # Fixed camera: fit the whole walk (head to toes, all frames) into the canvas.
        pts = [_project(cam, joints[k])[0] for k in ("head", "l_toe", "r_toe", "l_heel", "r_heel")]
        lo, hi = np.min([p.min(0) for p in pts], 0), np.max([p.max(0) for p in pts], 0)
        lo, hi = lo - 0.15 * (hi - lo)[1], hi + 0.15 * (hi - lo)[1]
        scale = 0.9 * min(width_px / (hi - lo)[0], height_px / (hi - lo)[1])
        offset = np.array([width_px, height_px]) / 2 - scale * (lo + hi) / 2

        def to_px(
            uv: np.ndarray, depth: np.ndarray, radius: float | np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
            return uv * scale + offset, radius * scale / depth

    return _draw(_polygons(dressed_parts(outfit, body, joints), cam, to_px), size)


def render_sequence(
    identity: Identity, view_deg: float, condition: str, n_frames: int, rng: np.random.Generator
) -> np.ndarray:
    """One dataset sequence: tracked render + segmentation noise + OpenGait alignment -> (T, 64, 64) uint8."""
    raw = render_raw(identity, view_deg, condition, n_frames, rng, RAW_SIZE, tracked=True)
    return align_sequence(segmentation_noise(raw, rng))

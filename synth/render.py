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

from gaitlu.errors import ConfigError
from gaitlu.preprocess import align_sequence
from synth.body import pose
from synth.defects import segmentation_noise
from synth.identity import Identity
from synth.mocap import FWD, LEFT, UP
from synth.motion import interpolate, sample_phases, vary_gait
from synth.outfit import adjust_angles, dressed_parts, sample_outfit
from synth.parts import Capsule, Part

FPS = 25.0  # CASIA-B's frame rate
ARC_POINTS = 6  # points per capsule end cap
SHIFT = 3  # cv2 fixed-point bits: sub-pixel polygon vertices
RAW_SIZE = (90, 72)  # dataset canvas (H, W); the person is about 72 px tall before alignment to 64


@dataclass(frozen=True)
class Capture:
    """How a walk is filmed: frame rate, camera elevation and the person's size in pixels.

    The default is CASIA-B's set-up (25 fps, cameras near hip height, the person about 72 px tall
    before the alignment to 64 rows); other values render the same people as another dataset would,
    to test whether a model's gain travels (docs/training.md).
    """

    fps: float = FPS
    elevation: tuple[float, float] = (2.0, 14.0)  # degrees above the horizontal, drawn per walk
    person_px: int = 72  # person height on the tracked canvas, pixels

    def __post_init__(self) -> None:
        lo, hi = self.elevation
        if not (self.fps > 0 and 0 <= lo <= hi < 80 and 16 <= self.person_px <= 1000):
            raise ConfigError(
                f"capture needs fps > 0, 0 <= elevation low <= high < 80 degrees and a person 16-1000 px "
                f"tall; got fps {self.fps}, elevation {self.elevation}, person {self.person_px} px"
            )

    @property
    def size(self) -> tuple[int, int]:
        """The tracked canvas (H, W): the person fills 80 % of its height, as on RAW_SIZE."""
        height = round(self.person_px / 0.8)
        return height, round(height * RAW_SIZE[1] / RAW_SIZE[0])


CASIA_B = Capture()

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


def render_raw(
    identity: Identity,
    view_deg: float,
    condition: str,
    n_frames: int,
    rng: np.random.Generator,
    size: tuple[int, int] = RAW_SIZE,
    *,
    tracked: bool = False,
    capture: Capture = CASIA_B,
) -> np.ndarray:
    """Ground-truth (T, H, W) uint8 masks (0/255) of one walk at any canvas size, no segmentation noise.

    The per-walk variation (speed, style drift, bag or coat, start phase, camera distance, elevation and
    path offset) is drawn from rng; frame rate and elevation range come from `capture`.
    """
    body = identity.body
    gait = vary_gait(identity.gait, rng)
    outfit = sample_outfit(condition, rng)
    phases = sample_phases(gait, n_frames, capture.fps, rng)
    angles = adjust_angles(outfit, interpolate(gait.angles, phases))  # (T, S, 2)
    joints = pose(body, angles, interpolate(gait.pelvis, phases))
    speed = gait.stride * body.leg / gait.cycle_s
    travel = speed * np.arange(n_frames) / capture.fps
    path = (travel - travel.mean() + rng.uniform(-1.0, 1.0))[:, None] * FWD  # (T, 3)
    joints = {k: v if k.endswith("_axis") else v + path for k, v in joints.items()}
    distance = max(rng.uniform(4.0, 8.0), 0.5 * travel[-1] + 2.0)
    cam = look_from(view_deg, distance, rng.uniform(*capture.elevation), 0.55 * body.height * UP)
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
    identity: Identity,
    view_deg: float,
    condition: str,
    n_frames: int,
    rng: np.random.Generator,
    capture: Capture = CASIA_B,
) -> np.ndarray:
    """One dataset sequence: tracked render + segmentation noise + OpenGait alignment -> (T, 64, 64) uint8."""
    raw = render_raw(
        identity, view_deg, condition, n_frames, rng, capture.size, tracked=True, capture=capture
    )
    return align_sequence(segmentation_noise(raw, rng))

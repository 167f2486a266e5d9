"""Read CMU walking BVH files and cut them into gait cycles of body-frame segment angles.

Why segment angles and not the BVH joint rotations: each CMU subject has its own calibrated skeleton
with its own rest pose, so raw Euler channels from two subjects mean different things and cannot be
blended. The direction of each body segment in a walker-aligned frame (x = walker's left, y = up,
z = walking direction) is skeleton-independent: it can be averaged across people and replayed on a body
with any proportions (synth/body.py).
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gaitlu.errors import DataError

log = logging.getLogger(__name__)

LEFT, UP, FWD = np.eye(3)
DOWN, BACK = -UP, -FWD

# Segment name -> (from joint, to joint, U, V, W): d = sin(b) W + cos(b) (cos(a) U + sin(a) V).
# `a` is the swing angle in the U-V plane (sagittal for limbs: positive = forward), `b` the tilt toward W.
SEGMENTS: dict[str, tuple[str, str, np.ndarray, np.ndarray, np.ndarray]] = {
    "l_thigh": ("LeftUpLeg", "LeftLeg", DOWN, FWD, LEFT),
    "l_shank": ("LeftLeg", "LeftFoot", DOWN, FWD, LEFT),
    "l_foot": ("LeftFoot", "LeftToeBase_end", FWD, DOWN, LEFT),
    "r_thigh": ("RightUpLeg", "RightLeg", DOWN, FWD, LEFT),
    "r_shank": ("RightLeg", "RightFoot", DOWN, FWD, LEFT),
    "r_foot": ("RightFoot", "RightToeBase_end", FWD, DOWN, LEFT),
    "trunk_low": ("pelvis", "Spine1", UP, FWD, LEFT),
    "trunk_up": ("Spine1", "Neck1", UP, FWD, LEFT),
    "head": ("Neck1", "Head_end", UP, FWD, LEFT),
    "l_upper_arm": ("LeftArm", "LeftForeArm", DOWN, FWD, LEFT),
    "l_forearm": ("LeftForeArm", "LeftHand", DOWN, FWD, LEFT),
    "r_upper_arm": ("RightArm", "RightForeArm", DOWN, FWD, LEFT),
    "r_forearm": ("RightForeArm", "RightHand", DOWN, FWD, LEFT),
    "hip_line": ("RightUpLeg", "LeftUpLeg", LEFT, FWD, UP),
    "shoulder_line": ("RightArm", "LeftArm", LEFT, FWD, UP),
}
UNIT_M = 0.0254 / 0.45  # one CMU ASF length unit in metres (README: 1 unit = 1/0.45 inch)


@dataclass
class Bvh:
    """A parsed BVH file: joint tree, rest offsets and the per-frame channel values."""

    names: list[str]  # joints, end sites named "<parent>_end"
    parents: list[int]  # -1 for the root
    offsets: np.ndarray  # (J, 3)
    channels: list[list[str]]  # per joint, e.g. ["Zrotation", "Yrotation", "Xrotation"]
    motion: np.ndarray  # (F, C) floats, degrees and length units
    frame_time: float


def _motion_field(pattern: str, body: str, path: Path) -> str:
    """The value of a MOTION header line ("Frames: 317"); DataError when the line is missing."""
    found = re.search(pattern, body)
    if found is None:
        raise DataError(f"{path}: malformed BVH (no {pattern.split(':')[0]!r} line in the MOTION section)")
    return found.group(1)


def parse_bvh(path: Path) -> Bvh:
    """Parse a BVH file (any channel order per joint); raise DataError on a malformed file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise DataError(f"cannot read BVH file {path}: {exc}") from exc
    head, sep, body = text.partition("MOTION")
    if not sep:
        raise DataError(f"{path}: no MOTION section, not a BVH file")
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[list[str]] = []
    stack: list[int] = []
    tokens = head.split()
    i = 0
    try:
        while i < len(tokens):
            tok = tokens[i]
            if tok in ("ROOT", "JOINT", "End"):
                name = tokens[i + 1] if tok != "End" else f"{names[stack[-1]]}_end"
                parents.append(stack[-1] if stack else -1)
                names.append(name)
                offsets.append([0.0, 0.0, 0.0])
                channels.append([])
                i += 2
            elif tok == "{":
                stack.append(len(names) - 1)
                i += 1
            elif tok == "}":
                stack.pop()
                i += 1
            elif tok == "OFFSET":
                offsets[stack[-1]] = [float(v) for v in tokens[i + 1 : i + 4]]
                i += 4
            elif tok == "CHANNELS":
                n = int(tokens[i + 1])
                channels[stack[-1]] = tokens[i + 2 : i + 2 + n]
                i += 2 + n
            else:
                i += 1
        n_frames = int(_motion_field(r"Frames:\s*(\d+)", body, path))
        frame_time = float(_motion_field(r"Frame Time:\s*([0-9.eE+-]+)", body, path))
        values = body.split("Frame Time:", 1)[1].split()[1:]
        motion = np.asarray(values, dtype=np.float64).reshape(n_frames, -1)
    except (IndexError, ValueError) as exc:
        raise DataError(f"{path}: malformed BVH ({exc})") from exc
    if motion.shape[1] != sum(len(c) for c in channels):
        raise DataError(f"{path}: {motion.shape[1]} values per frame, header declares another count")
    return Bvh(names, parents, np.asarray(offsets), channels, motion, frame_time)


def _axis_rotation(axis: str, deg: np.ndarray) -> np.ndarray:
    """(F,) degrees -> (F, 3, 3) rotation about x, y or z."""
    r = np.deg2rad(deg)
    c, s = np.cos(r), np.sin(r)
    one, zero = np.ones_like(r), np.zeros_like(r)
    rows = {
        "X": [[one, zero, zero], [zero, c, -s], [zero, s, c]],
        "Y": [[c, zero, s], [zero, one, zero], [-s, zero, c]],
        "Z": [[c, -s, zero], [s, c, zero], [zero, zero, one]],
    }[axis]
    return np.moveaxis(np.asarray(rows), (0, 1), (-2, -1))


def forward_kinematics(bvh: Bvh) -> dict[str, np.ndarray]:
    """Global position (F, 3) of every joint and end site, in metres."""
    n_frames = bvh.motion.shape[0]
    rot: list[np.ndarray] = []
    pos: list[np.ndarray] = []
    col = 0
    for j, (parent, chans) in enumerate(zip(bvh.parents, bvh.channels, strict=True)):
        local_r = np.broadcast_to(np.eye(3), (n_frames, 3, 3))
        local_t = np.broadcast_to(bvh.offsets[j], (n_frames, 3)).copy()
        for ch in chans:
            values = bvh.motion[:, col]
            col += 1
            if ch.endswith("position"):
                local_t[:, "XYZ".index(ch[0])] += values
            else:
                # BVH channels compose in listed order: R = R_first @ R_second @ ...
                local_r = local_r @ _axis_rotation(ch[0], values)
        if parent < 0:
            rot.append(local_r)
            pos.append(local_t)
        else:
            pos.append(pos[parent] + np.einsum("fij,fj->fi", rot[parent], local_t))
            rot.append(rot[parent] @ local_r)
    joints = {name: p * UNIT_M for name, p in zip(bvh.names, pos, strict=True)}
    joints["pelvis"] = 0.5 * (joints["LeftUpLeg"] + joints["RightUpLeg"])
    return joints


def segment_angles(joints: dict[str, np.ndarray], frame: np.ndarray) -> np.ndarray:
    """(F, S, 2) angles (a, b) of every segment in SEGMENTS, in the walker frame `frame` (3, 3) rows L/U/F."""
    out = []
    for start, end, u, v, w in SEGMENTS.values():
        d = (joints[end] - joints[start]) @ frame.T  # (F, 3) in walker coordinates
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        out.append(np.stack([np.arctan2(d @ v, d @ u), np.arcsin(np.clip(d @ w, -1, 1))], axis=-1))
    return np.stack(out, axis=1)


def _local_maxima(x: np.ndarray, min_gap: int) -> np.ndarray:
    """Indices of local maxima of x that are the largest value within +-min_gap samples."""
    peaks = []
    for i in range(1, len(x) - 1):
        lo, hi = max(0, i - min_gap), min(len(x), i + min_gap + 1)
        if x[i] == x[lo:hi].max() and x[i] > x[i - 1]:
            peaks.append(i)
    return np.asarray(peaks, dtype=int)


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    kernel = np.hanning(width + 2)[1:-1]
    kernel /= kernel.sum()
    return np.convolve(np.pad(x, width, mode="edge"), kernel, mode="same")[width:-width]


def _resample_periodic(x: np.ndarray, n_phases: int) -> np.ndarray:
    """(N+1, ...) samples covering one closed cycle -> (n_phases, ...) with the end-start drift removed."""
    src = np.linspace(0.0, 1.0, len(x))
    dst = np.arange(n_phases) / n_phases
    flat = x.reshape(len(x), -1)
    drift = flat[-1] - flat[0]
    flat = flat - src[:, None] * drift  # make the cycle close exactly
    res = np.stack([np.interp(dst, src, flat[:, k]) for k in range(flat.shape[1])], axis=1)
    return res.reshape((n_phases, *x.shape[1:]))


@dataclass
class Cycle:
    """One left-heel-strike to left-heel-strike gait cycle on a fixed phase grid."""

    angles: np.ndarray  # (P, S, 2) radians
    pelvis: np.ndarray  # (P, 3) pelvis offset from steady progression, in leg lengths (L, U, F)
    stride: float  # pelvis travel over the cycle, in leg lengths
    duration: float  # seconds
    source: str  # e.g. "07_01"


def extract_cycles(path: Path, n_phases: int = 64) -> list[Cycle]:
    """Cut a walking trial into steady gait cycles (left foot furthest forward = left heel strike).

    Cycles are kept only when the walker moves steadily (speed, duration and stride in a human range and
    the pose at both ends agrees), which drops the start/stop parts of CMU 131's takes.
    """
    bvh = parse_bvh(path)
    joints = forward_kinematics(bvh)
    fps = 1.0 / bvh.frame_time
    pelvis = joints["pelvis"]
    moving = np.linalg.norm(np.diff(pelvis[:, [0, 2]], axis=0), axis=1) * fps > 0.05
    start = int(np.argmax(moving))  # skips the T-pose frame and any standing still at the start
    leg = float(np.median(np.linalg.norm(joints["LeftUpLeg"] - joints["LeftLeg"], axis=1)))
    leg += float(np.median(np.linalg.norm(joints["LeftLeg"] - joints["LeftFoot"], axis=1)))
    cycles: list[Cycle] = []
    travel = pelvis[-1] - pelvis[start]
    fwd = np.array([travel[0], 0.0, travel[2]]) / np.hypot(travel[0], travel[2])
    reach = (joints["LeftFoot"] - joints["RightFoot"]) @ fwd
    reach = _smooth(reach, max(3, int(0.05 * fps)))
    strikes = [s for s in _local_maxima(reach, int(0.35 * fps)) if s > start]
    for s0, s1 in itertools.pairwise(strikes):
        duration = (s1 - s0) / fps
        step = pelvis[s1] - pelvis[s0]
        stride = float(np.hypot(step[0], step[2])) / leg
        if not (0.8 <= duration <= 1.6 and 1.0 <= stride <= 2.35):
            continue
        fwd_c = np.array([step[0], 0.0, step[2]]) / np.hypot(step[0], step[2])
        if fwd_c @ fwd < 0.95:  # turning, not straight walking
            continue
        frame = np.stack([np.cross(UP, fwd_c), UP, fwd_c])  # rows: left, up, forward
        span = slice(s0, s1 + 1)
        angles = segment_angles({k: v[span] for k, v in joints.items()}, frame)
        if np.abs(angles[-1] - angles[0]).max() > np.deg2rad(20):  # not a steady, repeating cycle
            continue
        t = np.linspace(0.0, 1.0, s1 - s0 + 1)[:, None]
        rel = (pelvis[span] - pelvis[s0] - t * step) @ frame.T / leg  # (N+1, 3) minus steady travel
        rel -= rel.mean(axis=0)
        cycles.append(
            Cycle(
                angles=_resample_periodic(angles, n_phases),
                pelvis=_resample_periodic(rel, n_phases),
                stride=stride,
                duration=duration,
                source=Path(path).stem,
            )
        )
    log.info("%s: %d steady cycles", Path(path).name, len(cycles))
    return cycles

"""The 3-D solids a posed body is drawn from: capsules (limbs) and elliptic tubes (torso, head, skirts).

A tube is a stack of horizontal ellipses; its outline depends on the view (a torso is broad from the front
and narrow from the side), which is what makes views genuinely different silhouettes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.body import Body
from synth.mocap import FWD, UP

Joints = dict[str, np.ndarray]


@dataclass(frozen=True)
class Capsule:
    """Segment a -> b (T, 3) with end radii ra, rb (metres, scalars or (T,))."""

    a: np.ndarray
    b: np.ndarray
    ra: float | np.ndarray
    rb: float | np.ndarray


@dataclass(frozen=True)
class Level:
    """One horizontal ellipse of a tube: centre (T, 3), half-width `a` along axis (T, 3), half-depth `b`."""

    centre: np.ndarray
    axis: np.ndarray
    a: float | np.ndarray
    b: float | np.ndarray


@dataclass(frozen=True)
class Tube:
    levels: tuple[Level, ...]


Part = Capsule | Tube


def flat_axis(axis: np.ndarray) -> np.ndarray:
    """(T, 3) axis -> its horizontal unit direction (tubes are stacks of horizontal ellipses)."""
    flat = axis - (axis @ UP)[:, None] * UP
    unit: np.ndarray = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-6)
    return unit


def leg_point(j: Joints, side: str, f: float) -> np.ndarray:
    """Point at fraction f down the leg: 0 = hip, 1 = knee, 2 = ankle."""
    if f <= 1.0:
        return j[f"{side}_hip"] + f * (j[f"{side}_knee"] - j[f"{side}_hip"])
    return j[f"{side}_knee"] + (f - 1.0) * (j[f"{side}_ankle"] - j[f"{side}_knee"])


def hem_level(j: Joints, f: float, spread: float) -> Level:
    """Hem of a skirt or coat at leg fraction f, wide enough to cover both legs plus `spread` metres."""
    lp, rp = leg_point(j, "l", f), leg_point(j, "r", f)
    gap = lp - rp
    width = np.linalg.norm(gap, axis=1)
    return Level(0.5 * (lp + rp), flat_axis(gap + 1e-3 * np.cross(UP, FWD)), 0.5 * width + spread, spread)


def torso(body: Body, j: Joints, widen: float = 1.0) -> Tube:
    """Pelvis to shoulders; `widen` > 1 for a coat."""
    hip_axis, sh_axis = flat_axis(j["hip_axis"]), flat_axis(j["shoulder_axis"])
    mid_axis = flat_axis(hip_axis + sh_axis)
    h, d = body.height, body.depth * widen
    return Tube(
        (
            Level(j["pelvis"] - 0.03 * h * UP, hip_axis, body.hips * widen, d * 1.05),
            Level(j["waist"], mid_axis, body.waist * widen, d * 0.95),
            Level(j["chest"] - 0.06 * h * UP, sh_axis, body.chest * widen, d * 1.1),
            Level(j["chest"] + 0.035 * h * UP, sh_axis, 0.42 * body.shoulder_width * widen, d * 0.8),
        )
    )


def head(body: Body, j: Joints, grow: float = 1.0) -> Tube:
    """Head (with hair) as a rounded stack of ellipses around its centre; `grow` > 1 for a hood/collar."""
    h, c, axis = body.height, j["head"], flat_axis(j["shoulder_axis"])
    w, d = body.head_w * grow, body.head_d * grow
    rows = ((-0.065, 0.55), (-0.035, 0.9), (0.0, 1.0), (0.035, 0.9), (0.062, 0.5))
    return Tube(tuple(Level(c + dy * h * UP, axis, s * w, s * d) for dy, s in rows))


def limbs(body: Body, j: Joints, sleeve: float = 1.0, leg_cover: float = 0.0) -> list[Part]:
    """Legs, arms, neck and shoulder/buttock rounding. `sleeve` thickens arms, `leg_cover` thickens legs."""
    h, ar = body.height, body.arm_r * sleeve
    parts: list[Part] = [
        Capsule(j["l_shoulder"], j["r_shoulder"], 1.3 * ar, 1.3 * ar),
        Capsule(j["l_hip"], j["r_hip"], body.thigh_r * 1.05, body.thigh_r * 1.05),
        Capsule(j["neck"] - 0.02 * h * UP, j["head"], 0.028 * h * body.girth**0.5, 0.025 * h),
    ]
    for s in "lr":
        ankle_r = 0.5 * body.calf_r + body.trouser + leg_cover
        parts += [
            Capsule(j[f"{s}_hip"], j[f"{s}_knee"], body.thigh_r + leg_cover, 0.85 * body.calf_r + leg_cover),
            Capsule(j[f"{s}_knee"], j[f"{s}_ankle"], body.calf_r + leg_cover, ankle_r),
            Capsule(j[f"{s}_heel"], j[f"{s}_toe"], 0.45 * body.ankle_h, 0.33 * body.ankle_h),
            Capsule(j[f"{s}_shoulder"], j[f"{s}_elbow"], 1.1 * ar, 0.85 * ar),
            Capsule(j[f"{s}_elbow"], j[f"{s}_wrist"], 0.85 * ar, 0.65 * ar),
            Capsule(j[f"{s}_wrist"], j[f"{s}_hand"], 0.75 * body.arm_r, 0.5 * body.arm_r),
        ]
    return parts


def everyday_wear(body: Body, j: Joints) -> list[Part]:
    """Hair hanging behind the head and a skirt, where this person has them."""
    parts: list[Part] = []
    if body.hair > 0:
        back = j["head"] - 0.6 * body.head_d * flat_axis(np.cross(j["shoulder_axis"], UP))
        parts.append(Capsule(back, back - body.hair * UP, 0.7 * body.head_w, 0.5 * body.head_w))
    if body.skirt > 0:
        top = Level(j["pelvis"], flat_axis(j["hip_axis"]), body.hips * 1.05, body.depth * 1.1)
        parts.append(Tube((top, hem_level(j, body.skirt, body.thigh_r * 1.3))))
    return parts

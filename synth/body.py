"""Body proportions of one synthetic person and the forward kinematics that pose them.

Proportions follow anthropometric segment lengths as fractions of stature (Drillis & Contini, as tabled
in Winter's Biomechanics of Human Movement): ankle height 0.039 H, shank 0.246 H, thigh 0.245 H (hip
joint at 0.530 H), shoulder at about 0.82 H. People differ around these means by a few percent per
segment, and much more in girth (build, BMI) and in what they wear; those differences, not noise, are
what makes one silhouette identity differ from another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.mocap import SEGMENTS, UP
from synth.motion import SEG


@dataclass(frozen=True)
class Body:
    """Lengths in metres; radii are half-widths in metres. Clothing fields describe everyday wear (nm)."""

    height: float
    thigh: float
    shank: float
    ankle_h: float
    foot: float
    trunk_low: float  # hip joints -> upper chest
    trunk_up: float  # upper chest -> neck
    head_seg: float  # neck -> top of head
    upper_arm: float
    forearm: float
    hand: float
    hip_width: float  # between hip joint centres
    shoulder_width: float  # between shoulder joint centres
    girth: float  # build: scales every flesh radius
    hips: float  # hip flesh half-width (wider in women)
    waist: float
    chest: float
    depth: float  # torso front-back half-depth
    head_w: float  # head half-width (with hair)
    head_d: float  # head half-depth (with hair)
    thigh_r: float
    calf_r: float
    arm_r: float
    trouser: float  # radius added around the ankle by loose trousers
    hair: float  # length of hair hanging behind the head, metres (0 = short)
    skirt: float  # hem as a fraction of the thigh (0 = trousers)

    @property
    def leg(self) -> float:
        return self.thigh + self.shank


def sample_body(rng: np.random.Generator) -> Body:
    """A random adult: sex-dependent stature and shape, per-segment variation of a few percent."""
    female = rng.random() < 0.25  # CASIA-B: 31 of 124 subjects are women
    height = rng.normal(1.63, 0.065) if female else rng.normal(1.76, 0.07)

    def frac(mean: float, cv: float = 0.04) -> float:
        return float(height * mean * rng.lognormal(0.0, cv))

    girth = float(rng.lognormal(0.0, 0.10))
    return Body(
        height=float(height),
        thigh=frac(0.245),
        shank=frac(0.246),
        ankle_h=frac(0.039, 0.05),
        foot=frac(0.075, 0.05),  # visible ankle to toe (shoes blur into the floor); heel adds a quarter
        trunk_low=frac(0.26),
        trunk_up=frac(0.05, 0.1),
        head_seg=frac(0.16, 0.05),
        upper_arm=frac(0.186),
        forearm=frac(0.146),
        hand=frac(0.10, 0.05),
        hip_width=frac(0.11 if female else 0.10, 0.06),
        shoulder_width=frac(0.195 if female else 0.22, 0.05),
        girth=girth,
        hips=frac(0.112 if female else 0.098, 0.06) * girth,
        waist=frac(0.075 if female else 0.085, 0.08) * girth**1.5,
        chest=frac(0.09 if female else 0.10, 0.06) * girth,
        depth=frac(0.065, 0.08) * girth**1.3,
        head_w=frac(0.049, 0.06) * (1.2 if female else 1.0),
        head_d=frac(0.054, 0.06),
        thigh_r=frac(0.057, 0.07) * girth,
        calf_r=frac(0.038, 0.08) * girth,
        arm_r=frac(0.026, 0.08) * girth,
        trouser=frac(0.02, 0.5) if rng.random() < 0.5 else 0.0,
        hair=frac(0.12, 0.4) if rng.random() < (0.6 if female else 0.05) else 0.0,
        skirt=float(rng.uniform(0.5, 1.1)) if female and rng.random() < 0.2 else 0.0,
    )


def directions(angles: np.ndarray) -> dict[str, np.ndarray]:
    """(T, S, 2) segment angles -> unit direction (T, 3) of every segment, walker frame (left, up, fwd)."""
    out = {}
    for name, (_, _, u, v, w) in SEGMENTS.items():
        a, b = angles[:, SEG[name], 0:1], angles[:, SEG[name], 1:2]
        out[name] = np.sin(b) * w + np.cos(b) * (np.cos(a) * u + np.sin(a) * v)
    return out


def pose(body: Body, angles: np.ndarray, pelvis: np.ndarray) -> dict[str, np.ndarray]:
    """Joint positions (T, 3) in the walker frame with the lowest foot point on the ground (y = 0)."""
    d = directions(angles)
    j: dict[str, np.ndarray] = {"pelvis": pelvis * body.leg}
    j["l_hip"] = j["pelvis"] + 0.5 * body.hip_width * d["hip_line"]
    j["r_hip"] = j["pelvis"] - 0.5 * body.hip_width * d["hip_line"]
    for side in "lr":
        j[f"{side}_knee"] = j[f"{side}_hip"] + body.thigh * d[f"{side}_thigh"]
        j[f"{side}_ankle"] = j[f"{side}_knee"] + body.shank * d[f"{side}_shank"]
        j[f"{side}_toe"] = j[f"{side}_ankle"] + body.foot * d[f"{side}_foot"]
        # Heel: behind and below the ankle, on the sole.
        j[f"{side}_heel"] = (
            j[f"{side}_ankle"] - 0.25 * body.foot * d[f"{side}_foot"] - 0.6 * body.ankle_h * UP
        )
    j["chest"] = j["pelvis"] + body.trunk_low * d["trunk_low"]
    j["waist"] = j["pelvis"] + 0.45 * body.trunk_low * d["trunk_low"]
    j["neck"] = j["chest"] + body.trunk_up * d["trunk_up"]
    j["head"] = j["neck"] + 0.55 * body.head_seg * d["head"]  # centre of the head
    shoulders = j["chest"] + 0.02 * body.height * UP
    for side, sign in (("l", 1.0), ("r", -1.0)):
        j[f"{side}_shoulder"] = shoulders + sign * 0.5 * body.shoulder_width * d["shoulder_line"]
        j[f"{side}_elbow"] = j[f"{side}_shoulder"] + body.upper_arm * d[f"{side}_upper_arm"]
        j[f"{side}_wrist"] = j[f"{side}_elbow"] + body.forearm * d[f"{side}_forearm"]
        j[f"{side}_hand"] = j[f"{side}_wrist"] + body.hand * d[f"{side}_forearm"]
    j["hip_axis"] = d["hip_line"]
    j["shoulder_axis"] = d["shoulder_line"]
    feet = np.stack([j["l_heel"], j["r_heel"], j["l_toe"], j["r_toe"]])[..., 1]  # (4, T) heights
    ground = feet.min(axis=0)[:, None] * UP  # (T, 3)
    for name in j:
        if not name.endswith("_axis"):
            j[name] = j[name] - ground
    return j

"""What a walk's condition adds to the body: a bag (bg) or a coat (cl), drawn fresh for every sequence.

As in CASIA-B, the bag or coat differs between a person's sequences; a carried bag also damps the arm
swing on its side, and a backpack makes people lean forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gaitlu.errors import ConfigError
from synth.body import Body
from synth.mocap import FWD, UP
from synth.motion import SEG
from synth.parts import (
    Capsule,
    Joints,
    Level,
    Part,
    Tube,
    everyday_wear,
    flat_axis,
    head,
    hem_level,
    limbs,
    torso,
)

CONDITIONS = ("nm", "bg", "cl")
BAGS = ("backpack", "shoulder", "hand")


@dataclass(frozen=True)
class Outfit:
    condition: str
    bag: str = ""
    side: str = "r"  # which side carries the bag
    size: float = 1.0  # bag size factor
    coat_widen: float = 1.0  # torso scale under a coat
    coat_hem: float = 0.0  # coat hem as a leg fraction (1 = knee)
    coat_spread: float = 0.0  # hem flare, fraction of height


def sample_outfit(condition: str, rng: np.random.Generator) -> Outfit:
    """A random bag or coat for one sequence of the given condition."""
    if condition == "nm":
        return Outfit("nm")
    if condition == "bg":
        return Outfit(
            "bg",
            bag=str(rng.choice(BAGS, p=[0.4, 0.4, 0.2])),
            side=str(rng.choice(["l", "r"])),
            size=float(rng.uniform(0.7, 1.4)),
        )
    if condition == "cl":
        return Outfit(
            "cl",
            coat_widen=float(rng.uniform(1.25, 1.6)),
            coat_hem=float(rng.uniform(0.8, 1.5)),
            coat_spread=float(rng.uniform(0.06, 0.12)),
        )
    raise ConfigError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")


def adjust_angles(outfit: Outfit, angles: np.ndarray) -> np.ndarray:
    """(T, S, 2) angles -> the same with the arm that carries a bag swinging less; backpacks lean forward."""
    if outfit.condition != "bg":
        return angles
    out = angles.copy()
    if outfit.bag == "backpack":
        out[:, [SEG["trunk_low"], SEG["trunk_up"]], 0] += np.deg2rad(4.0)
        return out
    damp = 0.2 if outfit.bag == "hand" else 0.5
    for seg in (f"{outfit.side}_upper_arm", f"{outfit.side}_forearm"):
        col = out[:, SEG[seg], 0]
        out[:, SEG[seg], 0] = col.mean() + damp * (col - col.mean())
    if outfit.bag == "hand":  # a loaded hand hangs straight down
        out[:, SEG[f"{outfit.side}_forearm"], 0] = out[:, SEG[f"{outfit.side}_upper_arm"], 0]
    return out


def _bag(outfit: Outfit, body: Body, j: Joints) -> list[Part]:
    h, s, side = body.height, outfit.size, outfit.side
    fwd = flat_axis(np.cross(j["shoulder_axis"], UP))
    if outfit.bag == "backpack":
        top = j["chest"] - (body.depth + 0.05 * h * s) * fwd
        axis = flat_axis(j["shoulder_axis"])
        return [
            Tube(
                (
                    Level(top + 0.02 * h * UP, axis, 0.08 * h * s, 0.045 * h * s),
                    Level(top - 0.17 * h * s * UP, axis, 0.09 * h * s, 0.05 * h * s),
                )
            )
        ]
    if outfit.bag == "hand":
        grip = j[f"{side}_hand"]
        axis = np.broadcast_to(FWD, grip.shape)
        return [
            Tube(
                (
                    Level(grip - 0.02 * h * UP, axis, 0.06 * h * s, 0.03 * h * s),
                    Level(grip - 0.16 * h * s * UP, axis, 0.09 * h * s, 0.04 * h * s),
                )
            )
        ]
    # Shoulder bag: strap from the shoulder, bag against the hip of the same side.
    sign = 1.0 if side == "l" else -1.0
    hip = j[f"{side}_hip"] + sign * (body.hips + 0.03 * h * s) * flat_axis(j["hip_axis"])
    axis = flat_axis(np.cross(UP, j["hip_axis"]) * -1.0)
    strap = Capsule(j[f"{side}_shoulder"], hip + 0.08 * h * s * UP, 0.01 * h, 0.01 * h)
    bag = Tube(
        (
            Level(hip + 0.08 * h * s * UP, axis, 0.09 * h * s, 0.03 * h * s),
            Level(hip - 0.04 * h * s * UP, axis, 0.11 * h * s, 0.035 * h * s),
        )
    )
    return [strap, bag]


def dressed_parts(outfit: Outfit, body: Body, j: Joints) -> list[Part]:
    """Every solid of the posed body for this outfit (the body's own hair/skirt included in nm and bg)."""
    if outfit.condition == "cl":
        h = body.height
        coat_top = Level(
            j["pelvis"] - 0.03 * h * UP,
            flat_axis(j["hip_axis"]),
            body.hips * outfit.coat_widen,
            body.depth * outfit.coat_widen,
        )
        skirt = Tube((coat_top, hem_level(j, outfit.coat_hem, outfit.coat_spread * h)))
        return [
            torso(body, j, outfit.coat_widen),
            skirt,
            head(body, j, grow=1.12),
            *limbs(body, j, sleeve=1.5, leg_cover=0.0),
        ]
    parts = [torso(body, j), head(body, j), *limbs(body, j), *everyday_wear(body, j)]
    return parts + _bag(outfit, body, j) if outfit.condition == "bg" else parts

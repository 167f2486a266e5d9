"""The motion basis (real CMU gait cycles) and each synthetic walker's own gait drawn from it.

A walker's gait is a random blend of a few real cycles, pushed along the principal components of the
real cycles (so the change stays human-shaped), with its own amplitude per joint group and posture
offsets. Each sequence then varies that gait a little (speed, stride, style drift), as a person does
from one walk to the next.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gaitlu.errors import DataError
from synth.mocap import SEGMENTS

SEG = {name: i for i, name in enumerate(SEGMENTS)}
ARM_SEGMENTS = [SEG[s] for s in ("l_upper_arm", "r_upper_arm", "l_forearm", "r_forearm")]
MOTION_FILE = Path(__file__).parent / "data" / "motion.npz"  # packaged (pyproject package-data)
UPPER_ARM_RANGE = (-45.0, 40.0)  # degrees of swing back/forward from vertical
ELBOW_MAX_FLEX = 70.0  # degrees
ARM_SWING_MAX = 60.0  # degrees, upper-arm range over a cycle
AMPLITUDE_LIMITS = (0.6, 1.5)  # the largest change of a person's swing amplitude from the real cycles
N_PCA = 8  # components used for style perturbation; the 31 real cycles support about this many
KNEE_MIN_FLEX = 2.0  # degrees: the straightest a knee gets in a cycle (calibrates CMU skeletons' knee zero)
STANCE_KNEE_RANGE = (0.4, 0.75)  # a person's stance-phase knee flexion, as a fraction of the mocap's
ARM_FORWARD = 5.0  # degrees: the mocap arms swing mostly backwards (-23..+12); CASIA-B walkers' less so


@dataclass(frozen=True)
class MotionBasis:
    """Real gait cycles on a common phase grid plus their principal components."""

    angles: np.ndarray  # (C, P, S, 2) radians, phase 0 = left heel strike
    pelvis: np.ndarray  # (C, P, 3) pelvis offset from steady travel, leg lengths (left, up, forward)
    stride: np.ndarray  # (C,) stride length in leg lengths
    duration: np.ndarray  # (C,) seconds per cycle
    source: np.ndarray  # (C,) CMU trial names
    components: np.ndarray  # (N_PCA, D) unit principal directions of the flattened [angles, pelvis]
    scales: np.ndarray  # (N_PCA,) standard deviation of the real cycles along each direction

    @property
    def n_phases(self) -> int:
        return int(self.angles.shape[1])


def _flatten(angles: np.ndarray, pelvis: np.ndarray) -> np.ndarray:
    return np.concatenate([angles.reshape(len(angles), -1), pelvis.reshape(len(pelvis), -1)], axis=1)


@functools.cache
def load_basis() -> MotionBasis:
    """The packaged motion basis (synth/data/motion.npz); needs no access to the BVH files."""
    try:
        with np.load(MOTION_FILE) as data:
            raw = {k: data[k] for k in data.files}
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(
            f"synth motion basis missing or corrupt ({exc}); rebuild: python -m synth.derive_motion"
        ) from exc
    if list(raw["segments"]) != list(SEGMENTS):
        raise DataError("synth/data/motion.npz was built for another segment list; rebuild it")
    angles = calibrate_knees(raw["angles"].astype(np.float32))
    pelvis = raw["pelvis"].astype(np.float32)
    flat = _flatten(angles, pelvis)  # (C, D)
    _, sing, vt = np.linalg.svd(flat - flat.mean(axis=0), full_matrices=False)
    return MotionBasis(
        angles=angles,
        pelvis=pelvis,
        stride=raw["stride"].astype(np.float32),
        duration=raw["duration"].astype(np.float32),
        source=raw["source"],
        components=vt[:N_PCA],
        scales=sing[:N_PCA] / np.sqrt(len(flat) - 1),
    )


def knee_flexion(angles: np.ndarray, side: str) -> np.ndarray:
    """(..., S, 2) angles -> (...) sagittal knee flexion in radians (thigh swing minus shank swing)."""
    return np.asarray(angles[..., SEG[f"{side}_thigh"], 0] - angles[..., SEG[f"{side}_shank"], 0])


def _set_knee(angles: np.ndarray, side: str, flexion: np.ndarray) -> None:
    angles[..., SEG[f"{side}_shank"], 0] = angles[..., SEG[f"{side}_thigh"], 0] - flexion


def calibrate_knees(angles: np.ndarray) -> np.ndarray:
    """(C, P, S, 2) cycles with every knee's straightest moment at KNEE_MIN_FLEX degrees.

    Several CMU skeletons never extend the knee below 7-20 degrees (their calibrated knee zero sits
    bent); real legs straighten in terminal stance. Only such offsets are removed; a knee that already
    straightens is left alone.
    """
    out = angles.copy()
    for side in "lr":
        knee = knee_flexion(out, side)  # (C, P)
        excess = np.maximum(knee.min(axis=1, keepdims=True) - np.deg2rad(KNEE_MIN_FLEX), 0.0)
        _set_knee(out, side, knee - excess)
    return out


def stance_window(phases: np.ndarray) -> np.ndarray:
    """1 around loading response (phase 0.15 of a leg's own cycle), 0 from toe-off through swing."""
    d = (phases - 0.15 + 0.5) % 1.0 - 0.5  # signed phase distance to 0.15, in [-0.5, 0.5)
    return np.where(np.abs(d) < 0.45, np.cos(np.pi * d / 0.9) ** 2, 0.0)


def straighten_stance(angles: np.ndarray, factor: float) -> np.ndarray:
    """(P, S, 2) cycle (phase 0 = left heel strike) with stance knee flexion scaled by `factor`.

    Mocap stance knees flex 25-40 degrees in loading response, real walkers in CASIA-B about 15 (their
    legs straighten at heel strike): this is what turned a crouched walk into an upright one.
    """
    out = angles.copy()
    phases = np.arange(len(angles)) / len(angles)
    for side, shift in (("l", 0.0), ("r", 0.5)):  # the right heel strikes half a cycle later
        knee = knee_flexion(out, side)
        _set_knee(out, side, knee * (1.0 - (1.0 - factor) * stance_window(phases - shift)))
    return out


@dataclass(frozen=True)
class Gait:
    """One walker's periodic gait: what the renderer replays."""

    angles: np.ndarray  # (P, S, 2) radians
    pelvis: np.ndarray  # (P, 3) leg lengths
    stride: float  # leg lengths per cycle
    cycle_s: float  # seconds per cycle


# Joint groups whose swing amplitude people differ in, with the spread (log-normal sigma) of that trait.
AMPLITUDE_GROUPS: dict[str, tuple[tuple[str, ...], float]] = {
    "legs": (("l_thigh", "r_thigh", "l_shank", "r_shank"), 0.10),
    "feet": (("l_foot", "r_foot"), 0.15),
    "arms": (("l_upper_arm", "r_upper_arm", "l_forearm", "r_forearm"), 0.25),
    "trunk": (("trunk_low", "trunk_up", "head", "hip_line", "shoulder_line"), 0.35),
}
# CASIA-B's walkers swing their arms less than the CMU subjects: at the mocap's swing the torso band of
# side-view silhouettes is 3 px wider than real (docs/realism-log.md); 0.6 of it matches.
ARM_SWING_SCALE = 0.6


def _pca_push(
    basis: MotionBasis, angles: np.ndarray, pelvis: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move a cycle by z standard deviations along each principal component."""
    delta = (z * basis.scales) @ basis.components  # (D,)
    n_ang = angles.size
    return angles + delta[:n_ang].reshape(angles.shape), pelvis + delta[n_ang:].reshape(pelvis.shape)


def _scale_amplitude(angles: np.ndarray, segments: tuple[str, ...], factor: float) -> np.ndarray:
    """Scale the swing (a) of segments about their cycle mean: bigger or smaller arm swing, stride..."""
    out = angles.copy()
    idx = [SEG[s] for s in segments]
    mean = out[:, idx, 0].mean(axis=0)
    out[:, idx, 0] = mean + factor * (out[:, idx, 0] - mean)
    return out


def _human_limits(angles: np.ndarray) -> np.ndarray:
    """Keep perturbed arms within what shoulders and elbows do in walking: no over-swing or hyperextension."""
    out = angles.copy()
    for side in "lr":
        swing = np.ptp(out[:, SEG[f"{side}_upper_arm"], 0])
        if swing > np.deg2rad(ARM_SWING_MAX):  # the real cycles swing 10-60 degrees
            arm = (f"{side}_upper_arm", f"{side}_forearm")
            out = _scale_amplitude(out, arm, np.deg2rad(ARM_SWING_MAX) / swing)
        upper, fore = out[:, SEG[f"{side}_upper_arm"], 0], out[:, SEG[f"{side}_forearm"], 0]
        np.clip(upper, *np.deg2rad(UPPER_ARM_RANGE), out=upper)
        np.clip(fore, upper - np.deg2rad(5.0), upper + np.deg2rad(ELBOW_MAX_FLEX), out=fore)
    return out


def sample_gait(rng: np.random.Generator, basis: MotionBasis | None = None) -> Gait:
    """A new person's gait: blend of 2-3 real cycles + PCA push + own amplitudes and posture."""
    basis = basis or load_basis()
    n_mix = int(rng.integers(2, 4))
    pick = rng.choice(len(basis.angles), size=n_mix, replace=False)
    w = rng.dirichlet(np.ones(n_mix))
    angles = np.einsum("c,cpsk->psk", w, basis.angles[pick])
    pelvis = np.einsum("c,cpk->pk", w, basis.pelvis[pick])
    angles, pelvis = _pca_push(basis, angles, pelvis, rng.normal(0.0, 0.6, N_PCA))
    for group, (segments, sigma) in AMPLITUDE_GROUPS.items():
        factor = float(np.clip(rng.lognormal(0.0, sigma), *AMPLITUDE_LIMITS))
        angles = _scale_amplitude(angles, segments, factor * (ARM_SWING_SCALE if group == "arms" else 1.0))
    # Posture: trunk lean, head carriage, arm abduction (arms held out) and toe-out, in radians.
    angles[:, [SEG["trunk_low"], SEG["trunk_up"]], 0] += rng.normal(0.0, np.deg2rad(3.0))
    angles[:, SEG["head"], 0] += rng.normal(0.0, np.deg2rad(6.0))
    abduct = abs(rng.normal(0.0, np.deg2rad(4.0)))
    angles[:, SEG["l_upper_arm"], 1] += abduct
    angles[:, SEG["r_upper_arm"], 1] -= abduct
    elbow = rng.normal(0.0, np.deg2rad(8.0))  # habitual elbow bend
    angles[:, [SEG["l_forearm"], SEG["r_forearm"]], 0] += elbow
    angles[:, ARM_SEGMENTS, 0] += np.deg2rad(ARM_FORWARD)
    angles = straighten_stance(angles, float(rng.uniform(*STANCE_KNEE_RANGE)))
    return Gait(
        angles=_human_limits(angles).astype(np.float32),
        pelvis=pelvis.astype(np.float32),
        stride=float(w @ basis.stride[pick] * rng.lognormal(0.0, 0.06)),
        cycle_s=float(w @ basis.duration[pick] * rng.lognormal(0.0, 0.06)),
    )


def vary_gait(gait: Gait, rng: np.random.Generator, basis: MotionBasis | None = None) -> Gait:
    """The same person on another walk: a little faster or slower, small drift in style."""
    basis = basis or load_basis()
    angles, pelvis = _pca_push(basis, gait.angles, gait.pelvis, rng.normal(0.0, 0.35, N_PCA))
    speed = float(rng.lognormal(0.0, 0.07))  # faster walks: longer strides and shorter cycles
    angles = _scale_amplitude(angles, AMPLITUDE_GROUPS["legs"][0], speed**0.5 * rng.lognormal(0.0, 0.02))
    angles = _scale_amplitude(angles, AMPLITUDE_GROUPS["arms"][0], float(rng.lognormal(0.0, 0.12)))
    return replace(
        gait,
        angles=_human_limits(angles),
        pelvis=pelvis,
        stride=gait.stride * speed**0.5,
        cycle_s=gait.cycle_s / speed**0.5,
    )


def sample_phases(gait: Gait, n_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """(T,) gait phases in [0, 1) for n_frames frames from a random start phase."""
    return (rng.random() + np.arange(n_frames) / (fps * gait.cycle_s)) % 1.0


def interpolate(table: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Periodic linear interpolation of a (P, ...) phase table at (T,) phases -> (T, ...)."""
    pos = phases * len(table)
    i0 = np.floor(pos).astype(int) % len(table)
    frac = (pos - np.floor(pos)).reshape(-1, *([1] * (table.ndim - 1)))
    values: np.ndarray = table[i0] * (1 - frac) + table[(i0 + 1) % len(table)] * frac
    return values

"""Is a track worth embedding? Per-track figures and the reasons a track is refused.

A gait embedding needs enough whole-body frames of one moving person: frames cut by the image border
(someone entering or leaving) and frames where two people form one blob are dropped before alignment,
and what is left must be long enough, cover most of the track's time span, be tall enough to hold a
gait, and move (a blob that never moves is a parked object or a lighting change, not a walker).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gaitlu.errors import ConfigError


@dataclass(frozen=True)
class QualityConfig:
    min_frames: int = 15  # silhouettes kept; about half a gait cycle-pair at 25 fps
    min_completeness: float = 0.5  # kept frames / frames the track spans
    min_height_px: float = 32.0  # median person height in the original video's pixels
    min_motion: float = 0.25  # largest centre shift or height change from the first box, in heights

    def __post_init__(self) -> None:
        if self.min_frames < 1 or not 0 <= self.min_completeness <= 1:
            raise ConfigError("QualityConfig: min_frames >= 1 and min_completeness in [0, 1]")


@dataclass(frozen=True)
class TrackQuality:
    frames_kept: int  # silhouettes in the written sequence
    frames_seen: int  # frames the person was detected in (kept or not)
    span: int  # frames from first to last detection
    completeness: float  # frames_kept / span
    mean_area_px: float  # mean mask area, original video pixels
    median_height_px: float
    border_cut_fraction: float  # of the frames seen, those with the person cut by the image border
    shared_fraction: float  # of the frames seen, those merged with another person
    longest_gap: int  # most consecutive frames without a detection inside the span
    motion: float
    problems: tuple[str, ...]  # empty: accepted

    @property
    def accepted(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "problems": list(self.problems), "accepted": self.accepted}


def assess(
    frames_seen: np.ndarray,
    boxes: np.ndarray,
    areas: np.ndarray,
    kept: np.ndarray,
    cut: np.ndarray,
    shared: np.ndarray,
    config: QualityConfig,
) -> TrackQuality:
    """Score one track from per-detection arrays: frame indices (N,), boxes (N, 4) x, y, w, h and areas
    (N,) in original pixels, and flags (N,) bool for kept, cut by the border, shared with someone."""
    n_seen = len(frames_seen)
    span = int(frames_seen[-1] - frames_seen[0] + 1)
    n_kept = int(kept.sum())
    heights = boxes[:, 3].astype(float)
    median_h = float(np.median(heights))
    centres = boxes[:, :2] + boxes[:, 2:] / 2  # (N, 2)
    shift = np.linalg.norm(centres - centres[0], axis=1) / median_h
    motion = float(max(shift.max(), np.abs(heights - heights[0]).max() / median_h))
    completeness = n_kept / span
    problems = []
    if n_kept < config.min_frames:
        problems.append(f"only {n_kept} usable frames (at least {config.min_frames} needed)")
    if completeness < config.min_completeness:
        problems.append(
            f"too broken: usable in {completeness:.0%} of its {span} frames "
            f"(at least {config.min_completeness:.0%} needed)"
        )
    if median_h < config.min_height_px:
        problems.append(f"too small: {median_h:.0f} px tall (at least {config.min_height_px:.0f} needed)")
    if motion < config.min_motion:
        problems.append("does not move (a static object or a lighting change, not a walking person)")
    return TrackQuality(
        frames_kept=n_kept,
        frames_seen=n_seen,
        span=span,
        completeness=round(completeness, 4),
        mean_area_px=round(float(areas.mean()), 1),
        median_height_px=round(median_h, 1),
        border_cut_fraction=round(float(cut.mean()), 4),
        shared_fraction=round(float(shared.mean()), 4),
        longest_gap=int(np.diff(frames_seen).max() - 1) if n_seen > 1 else 0,
        motion=round(motion, 3),
        problems=tuple(problems),
    )

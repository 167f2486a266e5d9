"""A small multi-person tracker: detections are linked frame to frame by box overlap, else by distance.

Each live track predicts its next box from its last one and a smoothed velocity; detections are
assigned greedily, best score first (IoU with the prediction, or, with no overlap, closeness of centres
within `max_centre_dist` box heights). An unassigned detection starts a track (birth); a track unseen
for more than `max_gap` frames ends (death), so short misses are bridged. When two people merge into one
blob, the blob goes to one track and is flagged `shared` (its mask holds both people), and the other
track is kept alive as occluded: `shared` observations never become silhouettes. The reverse, one person
broken into several blobs, is caught before births: a blob lying mostly inside a track's predicted box is
merged into that track's detection rather than starting a track of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gaitlu.errors import ConfigError
from video.detect import Box, Detection, merge


@dataclass(frozen=True)
class TrackerConfig:
    max_gap: int = 8  # frames a track survives unseen (0.3 s at 25 fps)
    min_iou: float = 0.1  # overlap with the prediction that links a detection
    max_centre_dist: float = 0.75  # without overlap: centre distance that still links, in box heights
    merge_iou: float = 0.3  # an unassigned track overlapping an assigned blob this much is inside it
    piece_inside: float = 0.5  # an unassigned blob with this much of its box inside a prediction joins it
    established: int = 5  # detections before a track counts as a person another blob can hide
    velocity_smoothing: float = 0.5  # weight of the newest displacement in the velocity estimate

    def __post_init__(self) -> None:
        if self.max_gap < 0 or not 0 < self.min_iou <= 1 or self.max_centre_dist <= 0:
            raise ConfigError("TrackerConfig: max_gap >= 0, min_iou in (0, 1], max_centre_dist > 0")


@dataclass
class Observation:
    frame: int
    detection: Detection
    shared: bool = False  # the blob holds this person and someone else


@dataclass
class TrackHistory:
    track_id: int
    observations: list[Observation] = field(default_factory=list)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # (dx, dy) pixels per frame
    last_seen: int = -1
    occluded_since: int | None = None  # frame from which it has been hidden inside another track's blob

    @property
    def last_box(self) -> Box:
        return self.observations[-1].detection.box

    def predicted(self, frame: int) -> np.ndarray:
        """(4,) float box x, y, w, h expected at `frame`."""
        x, y, w, h = self.last_box
        dx, dy = self.velocity * (frame - self.last_seen)
        return np.array([x + dx, y + dy, w, h], float)


def _intersection(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return float(ix * iy)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    inter = _intersection(a, b)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def inside(piece: np.ndarray, box: np.ndarray) -> float:
    """The fraction of box `piece` that lies inside `box`."""
    area = piece[2] * piece[3]
    return _intersection(piece, box) / area if area > 0 else 0.0


def _centre(box: np.ndarray | Box) -> np.ndarray:
    return np.array([box[0] + box[2] / 2, box[1] + box[3] / 2], float)


class Tracker:
    """Feed `update(frame, detections)` for every frame in order, then `finish()` for all tracks."""

    def __init__(self, config: TrackerConfig = TrackerConfig()) -> None:
        self.config = config
        self._live: list[TrackHistory] = []
        self._done: list[TrackHistory] = []
        self._next_id = 0

    def _score(self, track: TrackHistory, box: np.ndarray, frame: int) -> float:
        """> 1 for overlap (1 + IoU), in (0, 1] for a close centre, 0 for no link."""
        pred = track.predicted(frame)
        overlap = iou(pred, box)
        if overlap >= self.config.min_iou:
            return 1.0 + overlap
        reach = self.config.max_centre_dist * max(pred[3], box[3])
        dist = float(np.linalg.norm(_centre(pred) - _centre(box)))
        return 1.0 - dist / reach if dist < reach else 0.0

    def update(self, frame: int, detections: list[Detection]) -> None:
        cfg = self.config
        boxes = [np.array(d.box, float) for d in detections]
        pairs = [
            (score, ti, di)
            for ti, track in enumerate(self._live)
            for di, box in enumerate(boxes)
            if (score := self._score(track, box, frame)) > 0
        ]
        assigned_tracks: dict[int, int] = {}
        assigned_dets: dict[int, int] = {}
        for _score, ti, di in sorted(pairs, reverse=True):
            if ti not in assigned_tracks and di not in assigned_dets:
                assigned_tracks[ti], assigned_dets[di] = di, ti
        found = {ti: detections[di] for ti, di in assigned_tracks.items()}
        for di, det in enumerate(detections):
            if di in assigned_dets:
                continue
            for ti in found:
                if inside(boxes[di], self._live[ti].predicted(frame)) >= cfg.piece_inside:
                    found[ti] = merge(found[ti], det)
                    assigned_dets[di] = ti
                    break
        shared: set[int] = set()
        for ti, track in enumerate(self._live):
            if ti in found or len(track.observations) < cfg.established:
                continue
            pred = track.predicted(frame)
            hiding = [tj for tj, det in found.items() if iou(pred, np.array(det.box, float)) >= cfg.merge_iou]
            if hiding:
                shared.update(hiding)
                if track.occluded_since is None:
                    track.occluded_since = frame
        for ti, det in found.items():
            self._extend(self._live[ti], Observation(frame, det, shared=ti in shared))
        for di, det in enumerate(detections):
            if di not in assigned_dets:
                track = TrackHistory(self._next_id)
                self._next_id += 1
                self._extend(track, Observation(frame, det))
                self._live.append(track)
        self._retire(frame)

    def _extend(self, track: TrackHistory, obs: Observation) -> None:
        if track.observations:
            step = (_centre(obs.detection.box) - _centre(track.last_box)) / (obs.frame - track.last_seen)
            a = self.config.velocity_smoothing
            track.velocity = a * step + (1 - a) * track.velocity
        track.observations.append(obs)
        track.last_seen = obs.frame
        track.occluded_since = None

    def _retire(self, frame: int) -> None:
        """End tracks unseen for too long; one hidden in another's blob may wait for twice the gap."""
        live: list[TrackHistory] = []
        for track in self._live:
            allowed = self.config.max_gap * (2 if track.occluded_since is not None else 1)
            (live if frame - track.last_seen <= allowed else self._done).append(track)
        self._live = live

    def finish(self) -> list[TrackHistory]:
        """Every track ever started, in order of birth."""
        tracks = sorted(self._done + self._live, key=lambda t: t.track_id)
        self._live, self._done = [], []
        return tracks

"""Video uploads: which uploads are videos, and the blocking work on one (run in the engine's video workers).

A video becomes one person's silhouette sequence: `video.extract_tracks` finds every walking person, the
caller's `track` (an index into the tracks found, in order of appearance) or else the best track is
taken, and its aligned (T, 64, 64) silhouettes are cut to model frames like any other sequence. What
people look at (a strip of aligned frames; a few downscaled video frames with the track's box) is cut
here too, as arrays, in the same worker, from the same extraction; the faces turn them into pictures
(service/presentation.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.errors import InvalidTrack
from gaitlu.preprocess import to_model_frames
from video import OnnxSegmenter, Track, TrackQualityError, VideoLimits, extract_tracks
from video.decode import VIDEO_SUFFIXES, VideoReader, video_path

STRIP_FRAMES = 12
THUMBNAILS = 8
THUMBNAIL_WIDTH = 160  # video pixels are shown at this width
BOX_COLOUR = (0, 200, 255)  # BGR amber: visible on most scenes


def is_video(name: str, content_type: str = "") -> bool:
    """A video upload, by its file name or its declared content type."""
    return Path(name).suffix.lower() in VIDEO_SUFFIXES or content_type.lower().startswith("video/")


@dataclass(frozen=True)
class VideoOptions:
    """How to turn a video upload into a sequence, and which pictures to cut from it."""

    method: str = "bgsub"  # "bgsub" or "onnx" (needs the operator's segmentation model)
    track: int | None = None  # index into the tracks found (order of appearance); None: the best
    strip: bool = False  # STRIP_FRAMES aligned frames side by side
    thumbnails: bool = False  # THUMBNAILS downscaled video frames with the track's box (the preview)


@dataclass(frozen=True)
class Thumbnail:
    frame: int  # video frame index
    image: np.ndarray  # (h, THUMBNAIL_WIDTH, 3) BGR uint8, the track's box drawn
    position: int  # index of the silhouette of this frame in the track's sequence (and model frames)


@dataclass(frozen=True)
class VideoTrack:
    """The person of a video that was embedded, and where they came from."""

    index: int  # in the video's tracks, as the `track` option counts them
    track: Track
    tracks_found: int
    method: str
    video: dict[str, Any]  # the container's metadata (VideoInfo.to_dict)
    frames: np.ndarray  # (T, 64, 44) uint8 model frames of the track
    strip: np.ndarray | None = None  # (64, n*44) uint8: n <= STRIP_FRAMES model frames side by side
    thumbnails: list[Thumbnail] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: which track, its frame range and quality, and the video it came from (the strip,
        an array, is the caller's to draw)."""
        return {
            "index": self.index,
            "track_id": self.track.track_id,
            "frame_range": list(self.track.frame_range),
            "silhouettes": len(self.track.sequence),
            "quality": self.track.quality.to_dict(),
            "tracks_found": self.tracks_found,
            "method": self.method,
            "video": self.video,
        }


def extract_video(
    data: bytes | Path,
    name: str,
    limits: VideoLimits,
    options: VideoOptions,
    model: OnnxSegmenter | None = None,
) -> VideoTrack:
    """Blocking: decode and extract one video (uploaded bytes, or a local file), choose its track, cut
    the pictures asked for (as arrays).

    Raises VideoError (unreadable, over a limit), NoPersonError / TrackQualityError (nothing usable, or the
    chosen track is not), InvalidTrack for a track index the video does not have."""
    with video_path(data, name) as (path, label):
        result = extract_tracks(path, method=options.method, model=model, limits=limits, name=label)
        index = result.chosen if options.track is None else options.track
        if index is None or not 0 <= index < len(result.tracks):
            raise InvalidTrack(
                f"{name}: no track {options.track}; the video has {len(result.tracks)} (0-based indices)",
                result,
            )
        track = result.tracks[index]
        if not track.quality.accepted:
            problems = "; ".join(track.quality.problems)
            raise TrackQualityError(f"{name}: track {index} cannot be embedded ({problems})", result)
        thumbnails = _thumbnails(path, label, track, limits) if options.thumbnails else []
    frames = to_model_frames(track.sequence)  # aligned (T, 64, 64) -> (T, 64, 44), one per silhouette
    return VideoTrack(
        index=index,
        track=track,
        tracks_found=len(result.tracks),
        method=result.method,
        video=result.video.to_dict(),
        frames=frames,
        strip=strip_image(frames) if options.strip else None,
        thumbnails=thumbnails,
    )


def spread(n_items: int, n_wanted: int) -> np.ndarray:
    """Up to `n_wanted` evenly spaced, distinct indices into `n_items`, first and last included."""
    return np.unique(np.linspace(0, n_items - 1, min(n_items, n_wanted)).round().astype(int))


def strip_image(frames: np.ndarray, count: int = STRIP_FRAMES) -> np.ndarray:
    """(T, 64, 44) frames -> `count` evenly spaced ones side by side, a (64, count*44) image."""
    chosen = frames[spread(len(frames), count)]  # (n, 64, 44)
    return np.concatenate(list(chosen), axis=1)  # n x (64, 44) -> (64, n*44)


def _thumbnails(path: Path, label: str, track: Track, limits: VideoLimits) -> list[Thumbnail]:
    """THUMBNAILS frames spread over the track's silhouettes, decoded again (the extraction keeps none),
    downscaled to THUMBNAIL_WIDTH with the track's box drawn."""
    positions = spread(len(track.frames), THUMBNAILS)
    wanted = {int(track.frames[p]): int(p) for p in positions}  # video frame -> silhouette index
    last = max(wanted)
    shown = []
    with VideoReader(path, limits, name=label) as reader:
        for index, frame in enumerate(reader.frames()):
            if index in wanted:
                shown.append(_thumbnail(frame, track, index, wanted[index]))
            if index >= last:
                break
    return shown


def _thumbnail(frame: np.ndarray, track: Track, index: int, position: int) -> Thumbnail:
    height, width = frame.shape[:2]
    scale = THUMBNAIL_WIDTH / width
    small = cv2.resize(frame, (THUMBNAIL_WIDTH, max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    x, y, w, h = (track.boxes[index - track.frame_range[0]] * scale).round().astype(int)  # video -> small px
    cv2.rectangle(small, (int(x), int(y)), (int(x + w), int(y + h)), BOX_COLOUR, 1)
    return Thumbnail(index, small, position)

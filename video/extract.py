"""Video -> silhouette sequences: decode, segment, find people, track them, judge and align each track.

`extract_tracks` is the one entry point (CLI and service). It holds no global state and sets no global
OpenCV option, so the service can run it from worker threads (one call per thread; a loaded
`OnnxSegmenter` may be shared between them). Frames taller than `work_height` are downscaled first:
segmentation cost follows the pixel count, and a person 180 px tall at 360 rows still aligns to 64.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from gaitlu.errors import ConfigError
from gaitlu.preprocess import ALIGNED_WIDTH, FRAME_HEIGHT, align_frame
from video.bgsub import BackgroundSubtractor, BgSubConfig
from video.decode import VideoInfo, VideoLimits, VideoReader, video_path
from video.detect import clean_mask, find_people
from video.errors import NoPersonError, TrackQualityError
from video.quality import QualityConfig, TrackQuality, assess
from video.segment_onnx import OnnxSegmenter
from video.tracking import Tracker, TrackerConfig, TrackHistory

logger = logging.getLogger(__name__)

METHODS = ("bgsub", "onnx")
MIN_DETECTIONS = 3  # a track seen in fewer frames is a flicker, not a person, and is not reported


@dataclass(frozen=True)
class ExtractConfig:
    work_height: int = 360  # taller frames are downscaled to this many rows before segmentation
    min_area: float = 0.002  # smallest person blob, as a fraction of the frame's pixels
    border: int = 1  # a box this close to the image edge means the person is cut by it
    decode_threads: int = 0  # FFmpeg decoding threads; 0 = FFmpeg's choice
    keep_masks: bool = False  # keep each kept frame's raw mask crop on the Track (evaluation, debugging)
    bgsub: BgSubConfig = field(default_factory=BgSubConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)

    def __post_init__(self) -> None:
        if self.work_height < FRAME_HEIGHT or not 0 < self.min_area < 1 or self.border < 0:
            raise ConfigError(
                f"ExtractConfig: work_height >= {FRAME_HEIGHT}, min_area in (0, 1), border >= 0"
            )


@dataclass(frozen=True)
class Track:
    """One person's walk: the aligned sequence and where it came from in the video."""

    track_id: int
    sequence: np.ndarray  # (T, 64, 64) uint8 aligned silhouettes, ready for to_model_frames / the loader
    frames: np.ndarray  # (T,) video frame index of each silhouette
    frame_range: tuple[int, int]  # [first, last + 1) frames with a detection
    boxes: np.ndarray  # (S, 4) int x, y, w, h in video pixels for each of the S frames of frame_range
    box_status: tuple[str, ...]  # per frame of frame_range: kept | cut | shared | unusable | missing
    quality: TrackQuality
    masks: tuple[np.ndarray, ...] = ()  # keep_masks: (h, w) 0/255 crops at working size, one per silhouette
    mask_boxes: np.ndarray | None = None  # keep_masks: (T, 4) their boxes at working size

    def mask_canvas(self, n_frames: int, size: tuple[int, int]) -> np.ndarray:
        """The kept raw masks pasted into (n_frames, H, W) uint8 at working size (needs keep_masks)."""
        if self.mask_boxes is None:
            raise ValueError("extract with ExtractConfig(keep_masks=True) to get the raw masks")
        canvas = np.zeros((n_frames, *size), np.uint8)
        for t, (x, y, w, h), crop in zip(self.frames, self.mask_boxes, self.masks, strict=True):
            canvas[t, y : y + h, x : x + w] = crop
        return canvas

    def summary(self) -> dict[str, Any]:
        return {"id": self.track_id, "frame_range": list(self.frame_range), "quality": self.quality.to_dict()}

    def sidecar(self) -> dict[str, Any]:
        """summary() plus per-frame boxes and status (what tracks.json holds)."""
        return {
            **self.summary(),
            "frames": self.frames.tolist(),
            "boxes": self.boxes.tolist(),
            "box_status": list(self.box_status),
        }


@dataclass(frozen=True)
class ExtractionResult:
    video: VideoInfo
    method: str
    frames_decoded: int
    work_size: tuple[int, int]  # (H, W) frames were segmented at
    tracks: list[Track]  # every track seen in at least MIN_DETECTIONS frames, in order of appearance
    chosen: int | None  # index in `tracks` of the accepted track with the most silhouettes

    @property
    def accepted(self) -> list[Track]:
        return [t for t in self.tracks if t.quality.accepted]

    @property
    def best(self) -> Track:
        if self.chosen is None:
            raise self.refusal()
        return self.tracks[self.chosen]

    def refusal(self) -> NoPersonError | TrackQualityError:
        """The error saying why nothing can be embedded; it carries this result."""
        if not self.tracks:
            return NoPersonError(f"nobody found walking in the video ({self.frames_decoded} frames)", self)
        top = max(self.tracks, key=lambda t: t.quality.frames_kept)
        problems = "; ".join(top.quality.problems)
        return TrackQualityError(
            f"no usable walking person ({len(self.tracks)} track(s) found; the longest, "
            f"track {top.track_id}: {problems})",
            self,
        )

    def report(self) -> dict[str, Any]:
        return {
            "video": self.video.to_dict(),
            "method": self.method,
            "frames_decoded": self.frames_decoded,
            "work_size": list(self.work_size),
            "chosen": None if self.chosen is None else self.tracks[self.chosen].track_id,
            "tracks": [t.summary() for t in self.tracks],
        }


Segmenter = BackgroundSubtractor | OnnxSegmenter


def make_segmenter(
    method: str,
    model: str | os.PathLike[str] | OnnxSegmenter | None = None,
    background: str | os.PathLike[str] | np.ndarray | None = None,
    config: ExtractConfig = ExtractConfig(),
) -> Segmenter:
    """The per-video segmenter for `method`; checked before any video is opened."""
    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
    if method == "onnx":
        if model is None:
            raise ConfigError("--method onnx needs --model SEG.onnx (a person-segmentation model)")
        if background is not None:
            raise ConfigError("--background applies to --method bgsub only")
        return model if isinstance(model, OnnxSegmenter) else OnnxSegmenter(model)
    if model is not None:
        raise ConfigError("--model applies to --method onnx only")
    return BackgroundSubtractor(config.bgsub, _background_image(background))


def _background_image(background: str | os.PathLike[str] | np.ndarray | None) -> np.ndarray | None:
    if background is None or isinstance(background, np.ndarray):
        return background
    image = cv2.imread(str(background), cv2.IMREAD_COLOR)
    if image is None:
        raise ConfigError(f"background image {background} cannot be read (expected a PNG or JPEG)")
    return image


def _scaled(frames: Iterable[np.ndarray], work_height: int) -> Iterator[np.ndarray]:
    for frame in frames:
        height, width = frame.shape[:2]
        if height > work_height:
            size = (max(1, round(width * work_height / height)), work_height)
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        yield frame


def extract_tracks(
    source: str | os.PathLike[str] | bytes,
    *,
    method: str = "bgsub",
    model: str | os.PathLike[str] | OnnxSegmenter | None = None,
    background: str | os.PathLike[str] | np.ndarray | None = None,
    limits: VideoLimits = VideoLimits(),
    config: ExtractConfig = ExtractConfig(),
    name: str | None = None,
    require: bool = True,
) -> ExtractionResult:
    """Extract every walking person's silhouette sequence from a video file (path or bytes).

    `method`: "bgsub" (fixed camera; `background` optionally gives the empty scene) or "onnx" (`model`:
    a person-segmentation ONNX file or a loaded OnnxSegmenter). `name` labels the video in messages.
    Raises VideoError for unreadable or over-limit input, and, with `require`, NoPersonError or
    TrackQualityError (both carry the result as `.result`) when there is nothing to embed.
    """
    segmenter = make_segmenter(method, model, background, config)
    tracker = Tracker(config.tracker)
    work_size = (0, 0)
    frames_decoded = 0
    with (
        video_path(source, name) as (path, label),
        VideoReader(path, limits, name=label, threads=config.decode_threads) as reader,
    ):
        for index, mask in enumerate(segmenter.masks(_scaled(reader.frames(), config.work_height))):
            work_size = mask.shape
            min_area = max(1, round(config.min_area * mask.size))
            tracker.update(index, find_people(clean_mask(mask), min_area))
            frames_decoded = index + 1
        info = reader.info
    scale = work_size[0] / info.height if frames_decoded else 1.0  # working pixels per video pixel
    tracks = [
        _finalise(history, work_size, scale, config)
        for history in tracker.finish()
        if len(history.observations) >= MIN_DETECTIONS
    ]
    accepted = [i for i, t in enumerate(tracks) if t.quality.accepted]
    chosen = max(
        accepted, key=lambda i: (tracks[i].quality.frames_kept, tracks[i].quality.completeness), default=None
    )
    result = ExtractionResult(info, method, frames_decoded, work_size, tracks, chosen)
    logger.info("%s: %d frames, %d track(s), %d accepted", label, frames_decoded, len(tracks), len(accepted))
    if require and chosen is None:
        raise result.refusal()
    return result


def _finalise(
    history: TrackHistory, work_size: tuple[int, int], scale: float, config: ExtractConfig
) -> Track:
    obs = history.observations
    frames = np.array([o.frame for o in obs])
    work_boxes = np.array([o.detection.box for o in obs])  # (N, 4) x, y, w, h at working size
    height, width = work_size
    b = config.border
    cut = (
        (work_boxes[:, 0] <= b)
        | (work_boxes[:, 1] <= b)
        | (work_boxes[:, 0] + work_boxes[:, 2] >= width - b)
        | (work_boxes[:, 1] + work_boxes[:, 3] >= height - b)
    )
    shared = np.array([o.shared for o in obs])
    aligned = [
        None if c or s else align_frame(o.detection.mask) for o, c, s in zip(obs, cut, shared, strict=True)
    ]
    kept = np.array([a is not None for a in aligned])
    boxes = work_boxes / scale  # (N, 4) video pixels
    areas = np.array([o.detection.area for o in obs]) / scale**2
    quality = assess(frames, boxes, areas, kept, cut, shared, config.quality)

    start, stop = int(frames[0]), int(frames[-1]) + 1
    span = np.arange(start, stop)
    # Every frame of the range gets a box: measured where seen, linearly interpolated across gaps.
    span_boxes = np.stack([np.interp(span, frames, boxes[:, k]) for k in range(4)], axis=1)  # (S, 4)
    status = np.full(len(span), "missing", dtype=object)
    status[frames - start] = np.where(
        cut, "cut", np.where(shared, "shared", np.where(kept, "kept", "unusable"))
    )
    silhouettes = [a for a in aligned if a is not None]
    sequence = np.stack(silhouettes) if silhouettes else np.zeros((0, FRAME_HEIGHT, ALIGNED_WIDTH), np.uint8)
    return Track(
        track_id=history.track_id,
        sequence=sequence,  # T x (64, 64) -> (T, 64, 64)
        frames=frames[kept],
        frame_range=(start, stop),
        boxes=np.rint(span_boxes).astype(int),
        box_status=tuple(status),
        quality=quality,
        masks=tuple(o.detection.mask for o, k in zip(obs, kept, strict=True) if k)
        if config.keep_masks
        else (),
        mask_boxes=work_boxes[kept] if config.keep_masks else None,
    )

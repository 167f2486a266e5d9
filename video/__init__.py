"""Silhouettes from video: decode, segment (background subtraction or an ONNX model), track, judge, align.

Public API (see docs/video.md): `extract_tracks(path_or_bytes, ...) -> ExtractionResult` with one `Track`
per person (aligned (T, 64, 64) uint8 sequence, frame range, boxes, quality); `VideoLimits` bounds what a
video may cost; `ExtractConfig` holds the tunables. No torch here: numpy and OpenCV, plus onnxruntime for
the optional ONNX method.
"""

from video.bgsub import BgSubConfig
from video.decode import VideoInfo, VideoLimits
from video.errors import NoPersonError, NothingToEmbedError, TrackQualityError, VideoError, VideoLimitError
from video.extract import METHODS, ExtractConfig, ExtractionResult, Track, extract_tracks
from video.quality import QualityConfig, TrackQuality
from video.segment_onnx import OnnxSegmenter
from video.tracking import TrackerConfig

__all__ = [
    "METHODS",
    "BgSubConfig",
    "ExtractConfig",
    "ExtractionResult",
    "NoPersonError",
    "NothingToEmbedError",
    "OnnxSegmenter",
    "QualityConfig",
    "Track",
    "TrackQuality",
    "TrackQualityError",
    "TrackerConfig",
    "VideoError",
    "VideoInfo",
    "VideoLimitError",
    "VideoLimits",
    "extract_tracks",
]

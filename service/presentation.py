"""What the engine returns as arrays, drawn as the pictures the API answers with (data URIs).

The engine and the galleries deal in arrays; the pictures are the service's to make, in the API's
formats (gaitlu/pictures.py): a preview's model frames and GEI as PNGs and its video frames as JPEGs,
a video track's strip as a PNG. The GEI picture an enrolment stores is drawn by `gaitlu.pictures.gei_png`,
which the routes hand to `Engine.enroll`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import VideoTrack
from gaitlu.pictures import gei_png, jpeg_data_uri, png_data_uri


@dataclass(frozen=True)
class SequencePreview:
    frames: list[str]  # one PNG data URI per model frame
    gei: str  # PNG data URI of the mean frame
    thumbnails: list[str]  # for a video: one JPEG data URI per thumbnail of its track, in order


def sequence_preview(frames: np.ndarray, video: VideoTrack | None = None) -> SequencePreview:
    """(T, 64, 44) uint8 model frames (and a video's thumbnails) -> pictures. Blocking: ~1 ms a frame."""
    thumbnails = [] if video is None else [jpeg_data_uri(t.image) for t in video.thumbnails]
    return SequencePreview([png_data_uri(frame) for frame in frames], gei_png(frames), thumbnails)


def strip_png(video: VideoTrack) -> str | None:
    """A video track's strip of aligned frames as a PNG data URI (None: not asked for)."""
    return None if video.strip is None else png_data_uri(video.strip)

"""What can go wrong between a video file and a silhouette sequence, as user-facing errors.

All are `gaitlu.errors.SequenceError`s: the CLI prints them and exits 2, the service maps them to 4xx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gaitlu.errors import SequenceError

if TYPE_CHECKING:
    from video.extract import ExtractionResult


class VideoError(SequenceError):
    """The file is not a readable video, or is over the limits (size, duration, resolution, time)."""


class VideoLimitError(VideoError):
    """The video is readable but over a limit (bytes, resolution, frames, duration, extraction time)."""


class NothingToEmbedError(SequenceError):
    """The video decoded but gives no usable track; `result` holds what was found, for reports."""

    def __init__(self, message: str, result: ExtractionResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class NoPersonError(NothingToEmbedError):
    """Nobody was found walking in the video."""


class TrackQualityError(NothingToEmbedError):
    """People were found, but no track is long or complete enough to embed."""

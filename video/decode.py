"""Open a video safely: sniff the container, check limits from its metadata, and again while decoding.

OpenCV's FFmpeg backend opens almost anything (a text file "opens" as raw data), so the container is
recognised from its first bytes first: MP4/MOV (`ftyp`), AVI (`RIFF....AVI `), Matroska/WebM (EBML
magic). The declared size, frame count, duration and resolution are checked against `VideoLimits` before
a frame is decoded, and since metadata can lie, the same limits (plus a wall-clock budget) are enforced
on every decoded frame: the decoding loop is bounded whatever the file says.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gaitlu.errors import ConfigError
from video.errors import VideoError, VideoLimitError

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm"})  # file names taken as video

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass(frozen=True)
class VideoLimits:
    """Bounds on what one video may cost; the service passes tighter ones for uploads."""

    max_bytes: int = 512 * MIB
    max_frames: int = 9000  # 6 minutes at 25 fps: a walk worth embedding is seconds long
    max_duration_s: float = 360.0
    max_pixels: int = 1920 * 1088  # 1080p (coded as 1088 rows by some encoders); 4K is refused
    max_seconds: float = 600.0  # wall-clock budget for decoding and extracting, whatever the metadata said

    def __post_init__(self) -> None:
        for field in fields(self):
            if getattr(self, field.name) <= 0:
                raise ConfigError(f"VideoLimits.{field.name} must be positive")


@dataclass(frozen=True)
class VideoInfo:
    """What the container declares (frame_count 0 or fps 0: not declared)."""

    container: str
    codec: str
    width: int
    height: int
    fps: float
    frame_count: int
    size_bytes: int

    @property
    def duration_s(self) -> float | None:
        return self.frame_count / self.fps if self.frame_count > 0 and self.fps > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "duration_s": self.duration_s}


def sniff_container(head: bytes) -> str | None:
    """The container named by a file's first 12 bytes, or None when it is not one we read."""
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "mkv"
    return None


_FORMATS_HELP = "MP4/MOV, AVI or MKV/WebM"


def _fourcc(value: float) -> str:
    code = int(value)
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return text if text.isprintable() and text.strip() else "unknown"


@contextmanager
def video_path(source: str | os.PathLike[str] | bytes, name: str | None = None) -> Iterator[tuple[Path, str]]:
    """A readable path for `source` (bytes go to a temp file OpenCV can open, removed afterwards) and
    the name to use in messages."""
    if not isinstance(source, (bytes, bytearray, memoryview)):
        path = Path(source)
        yield path, name or str(path)
        return
    with tempfile.TemporaryDirectory(prefix="gaitlu-video-") as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(source)
        yield path, name or "<upload>"


class VideoReader:
    """An opened, limit-checked video: `info` from the container, `frames()` decodes within the limits.

    Not thread-safe; open one per worker. Use as a context manager (the capture is released on exit).
    """

    def __init__(self, path: Path, limits: VideoLimits, *, name: str | None = None, threads: int = 0) -> None:
        self.name = name or str(path)
        self.limits = limits
        self.info = self._probe(path)
        params = [cv2.CAP_PROP_N_THREADS, threads] if threads > 0 else []
        self._capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
        if not self._capture.isOpened():
            raise VideoError(
                f"{self.name}: cannot open the video (truncated, corrupt or an unsupported codec)"
            )
        self.info = self._declared(self.info)
        self._check_declared(self.info)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._capture.release()

    def _probe(self, path: Path) -> VideoInfo:
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                head = f.read(12)
        except OSError as exc:
            raise VideoError(f"{self.name}: cannot read ({exc.strerror or exc})") from None
        if size == 0:
            raise VideoError(f"{self.name}: the file is empty")
        if size > self.limits.max_bytes:
            raise VideoLimitError(f"{self.name}: {size} bytes is over the {self.limits.max_bytes}-byte limit")
        container = sniff_container(head)
        if container is None:
            raise VideoError(f"{self.name}: not a video file (expected {_FORMATS_HELP})")
        return VideoInfo(container, "unknown", 0, 0, 0.0, 0, size)

    def _declared(self, info: VideoInfo) -> VideoInfo:
        cap = self._capture
        fps = cap.get(cv2.CAP_PROP_FPS)
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        return VideoInfo(
            container=info.container,
            codec=_fourcc(cap.get(cv2.CAP_PROP_FOURCC)),
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            fps=float(fps) if np.isfinite(fps) and 0 < fps < 1000 else 0.0,
            frame_count=int(count) if np.isfinite(count) and count > 0 else 0,
            size_bytes=info.size_bytes,
        )

    def _check_declared(self, info: VideoInfo) -> None:
        limits = self.limits
        if info.width * info.height > limits.max_pixels:
            raise VideoLimitError(
                f"{self.name}: {info.width}x{info.height} is over the resolution limit "
                f"of {limits.max_pixels} pixels per frame (downscale it, e.g. to 1080p)"
            )
        if info.frame_count > limits.max_frames:
            raise VideoLimitError(
                f"{self.name}: {info.frame_count} frames is over the limit of {limits.max_frames} "
                "(cut it shorter)"
            )
        if info.duration_s is not None and info.duration_s > limits.max_duration_s:
            raise VideoLimitError(
                f"{self.name}: {info.duration_s:.0f} s is over the duration limit of "
                f"{limits.max_duration_s:.0f} s (cut it shorter)"
            )

    def frames(self) -> Iterator[np.ndarray]:
        """Decode (H, W, 3) uint8 BGR frames in order, at most `max_frames` of them.

        `max_seconds` bounds the wall-clock time of the whole loop from the first frame on, including
        what the caller does with each frame. Raises VideoError when a limit is passed or nothing decodes.
        """
        limits, cap = self.limits, self._capture
        deadline = time.monotonic() + limits.max_seconds
        max_frames = min(limits.max_frames, int(limits.max_duration_s * self.info.fps) or limits.max_frames)
        decoded = 0
        while True:
            if time.monotonic() > deadline:
                raise VideoLimitError(
                    f"{self.name}: extraction took longer than {limits.max_seconds:.0f} s "
                    f"(stopped after {decoded} frames)"
                )
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            if decoded == max_frames:
                raise VideoLimitError(
                    f"{self.name}: more than {max_frames} frames decoded, over the frame/duration limit "
                    "(the container under-declared its length)"
                )
            if frame.ndim != 3:
                raise VideoError(
                    f"{self.name}: decoded a frame of shape {frame.shape}, expected colour frames"
                )
            if frame.shape[:2] != (self.info.height, self.info.width):
                if decoded or self.info.width * self.info.height:
                    raise VideoError(
                        f"{self.name}: decoded a {frame.shape[0]}x{frame.shape[1]} frame, the container "
                        f"declared {self.info.height}x{self.info.width}"
                    )
                self.info = replace(self.info, height=frame.shape[0], width=frame.shape[1])  # undeclared size
                self._check_declared(self.info)
            decoded += 1
            yield frame
        if decoded == 0:
            raise VideoError(f"{self.name}: no frame could be decoded (truncated or corrupt video)")
        if self.info.frame_count and decoded < 0.9 * self.info.frame_count:
            logger.warning(
                "%s: decoded %d of the %d declared frames (truncated?)",
                self.name,
                decoded,
                self.info.frame_count,
            )

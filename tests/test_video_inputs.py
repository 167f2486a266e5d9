"""Bad and oversized videos get clear errors, fast: checked from the container first, then while decoding."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest

from gaitlu.errors import ConfigError, SequenceError
from tests.support.synthetic_video import make_video, write_video
from video import NoPersonError, VideoError, VideoLimits, extract_tracks
from video.decode import VideoReader

SIZE = (120, 160)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("inputs")


@pytest.fixture(scope="module")
def walk_mp4(tmp) -> Path:
    return make_video(tmp / "walk.mp4", np.random.default_rng(0), size=SIZE, n_frames=40).path


def noise_avi(path: Path, frames: int = 30, *, declared: int | None = None) -> Path:
    """An MJPG AVI of random frames; `declared` rewrites the frame count its headers claim."""
    data = np.random.default_rng(0).integers(0, 255, (frames, *SIZE, 3), dtype=np.uint8)
    write_video(path, data)
    if declared is not None:
        raw = bytearray(path.read_bytes())
        avih, strh = raw.find(b"avih"), raw.find(b"strh")
        raw[avih + 24 : avih + 28] = struct.pack("<I", declared)  # MainAVIHeader.dwTotalFrames
        raw[strh + 40 : strh + 44] = struct.pack("<I", declared)  # AVIStreamHeader.dwLength
        path.write_bytes(bytes(raw))
    return path


def refused(source, match: str, error: type[Exception] = VideoError, **kwargs) -> None:
    """Refused, and cheaply: the CPU time this process spent (its decoder threads too) is what the input
    cost, whatever else loads the machine."""
    start = time.process_time()
    with pytest.raises(error, match=match):
        extract_tracks(source, **kwargs)
    assert time.process_time() - start < 5, "refused only after seconds of CPU work"


def test_errors_are_sequence_errors():
    assert issubclass(VideoError, SequenceError) and issubclass(NoPersonError, SequenceError)


def test_a_non_video_file_is_refused(tmp):
    text = tmp / "notes.mp4"
    text.write_text("these are not the frames you are looking for\n" * 50)
    refused(text, "not a video file")
    refused(b"\x89PNG\r\n\x1a\n" + bytes(100), "not a video file")
    refused(tmp / "missing.mp4", "cannot read")
    empty = tmp / "empty.mp4"
    empty.write_bytes(b"")
    refused(empty, "empty")


def test_a_truncated_mp4_is_refused(tmp, walk_mp4):
    data = walk_mp4.read_bytes()
    for keep in (len(data) // 2, len(data) - 200, 40):
        refused(data[:keep], "truncated|no frame could be decoded")


def test_an_empty_scene_has_nobody_in_it(tmp):
    scene = make_video(tmp / "empty-scene.mp4", np.random.default_rng(1), size=SIZE, walkers=[], n_frames=40)
    refused(scene.path, "nobody found walking", NoPersonError)


def test_limits_are_decided_from_the_metadata_before_decoding(tmp, walk_mp4):
    refused(walk_mp4, "resolution limit", limits=VideoLimits(max_pixels=100 * 100))
    refused(walk_mp4, "40 frames is over the limit of 30", limits=VideoLimits(max_frames=30))
    refused(walk_mp4, "duration limit", limits=VideoLimits(max_duration_s=1.0))
    refused(walk_mp4, "over the 1000-byte limit", limits=VideoLimits(max_bytes=1000))
    # A 10-minute video (15000 frames at 25 fps) is refused without decoding one of them.
    long = noise_avi(tmp / "long.avi", declared=15000)
    with VideoReader(long, VideoLimits(max_frames=20000, max_duration_s=1000)) as reader:
        assert reader.info.frame_count == 15000 and reader.info.duration_s == 600
    refused(long, "15000 frames is over the limit")


def test_limits_are_enforced_while_decoding_when_the_metadata_lies(tmp):
    liar = noise_avi(tmp / "liar.avi", frames=30, declared=5)
    with VideoReader(liar, VideoLimits(max_frames=10)) as reader:
        assert reader.info.frame_count == 5
        with pytest.raises(VideoError, match="more than 10 frames decoded"):
            for _ in reader.frames():
                pass
    refused(liar, "more than 10 frames", limits=VideoLimits(max_frames=10))


def test_the_wall_clock_budget_stops_extraction(walk_mp4):
    refused(walk_mp4, "took longer than", limits=VideoLimits(max_seconds=1e-6))


def test_bad_options_are_config_errors(tmp, walk_mp4):
    refused(walk_mp4, "method must be one of", ConfigError, method="sam")
    refused(walk_mp4, "needs --model", ConfigError, method="onnx")
    refused(walk_mp4, "applies to --method onnx", ConfigError, model=tmp / "m.onnx")
    refused(walk_mp4, "does not exist", ConfigError, method="onnx", model=tmp / "m.onnx")
    junk = tmp / "junk.onnx"
    junk.write_bytes(b"not a model")
    refused(walk_mp4, "cannot load", ConfigError, method="onnx", model=junk)
    refused(walk_mp4, "cannot be read", ConfigError, background=tmp / "no-such.png")
    with pytest.raises(ConfigError):
        VideoLimits(max_frames=0)

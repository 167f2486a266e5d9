"""Video uploads through the service: /embed, /search, enrolment and /sequences/preview take .mp4 & co.,
extract one walking person server-side, say which track they used, and refuse bad videos with clear 4xx."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from engine import Engine, Overloaded, Upload
from engine.videos import STRIP_FRAMES, THUMBNAIL_WIDTH, spread
from gaitlu.evaluation.gei import gait_energy_image
from gaitlu.pictures import JPEG_PREFIX, PNG_PREFIX
from gaitlu.preprocess import to_model_frames
from tests.support.servers import client, error_code, npy_bytes, settings_for
from tests.support.videos import FRAMES, SIZE, Videos, synthetic_videos
from video import extract_tracks

GALLERY = "walkers"


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Videos:
    return synthetic_videos(tmp_path_factory)


@pytest.fixture(scope="module")
def api(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with client(tiny_artifact, tmp_path_factory.mktemp("video-service")) as c:
        c.post("/galleries", json={"name": GALLERY}).raise_for_status()
        yield c


def video_file(videos: Videos, name: str, field: str = "files") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (f"{name}.mp4", videos.path(name).read_bytes(), "video/mp4"))]


def image(uri: str, prefix: str = PNG_PREFIX) -> np.ndarray:
    assert uri.startswith(prefix)
    data = np.frombuffer(base64.b64decode(uri.removeprefix(prefix)), np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def model_frames(videos: Videos, name: str) -> np.ndarray:
    """What the service should embed for a video: its best track's silhouettes, as model frames."""
    return to_model_frames(extract_tracks(videos.path(name)).best.sequence)  # (T, 64, 44)


def test_embedding_a_video_embeds_its_best_track_and_says_which(api: TestClient, videos: Videos) -> None:
    response = api.post("/embed", files=video_file(videos, "alice-1"), data={"strip": "true"})
    assert response.status_code == 200, response.text
    [item] = response.json()["data"]
    track = item["track"]
    expected = model_frames(videos, "alice-1")
    assert (track["index"], track["tracks_found"], track["method"]) == (0, 1, "bgsub")
    assert track["silhouettes"] == item["frames"] == len(expected)
    assert track["frame_range"][1] <= FRAMES and track["quality"]["accepted"]
    assert (track["video"]["width"], track["video"]["height"]) == (SIZE[1], SIZE[0])
    strip = image(track["strip"])
    assert strip.shape == (64, STRIP_FRAMES * 44)
    np.testing.assert_array_equal(
        strip, np.concatenate(list(expected[spread(len(expected), STRIP_FRAMES)]), 1)
    )

    # The same silhouettes uploaded as a sequence file embed the same: one path after extraction.
    as_sequence = api.post("/embed", files={"files": ("frames.npy", npy_bytes(expected))}).json()["data"][0]
    np.testing.assert_allclose(item["embedding"], as_sequence["embedding"], atol=1e-5)
    assert as_sequence["track"] is None


def test_a_video_content_type_is_enough_and_the_strip_is_optional(api: TestClient, videos: Videos) -> None:
    files = {"files": ("upload", videos.path("bob-1").read_bytes(), "video/mp4")}
    response = api.post("/embed", files=files)
    assert response.status_code == 200, response.text
    track = response.json()["data"][0]["track"]
    assert track["index"] == 0 and track["strip"] is None


def test_videos_enroll_through_the_route_and_search_finds_them(api: TestClient, videos: Videos) -> None:
    for subject in ("alice", "bob"):
        masks = videos.truth(f"{subject}-1").read_bytes()  # the ground truth of the same walk
        truth = ("files", (f"{subject}-truth.npy", masks, "application/octet-stream"))
        files = [*video_file(videos, f"{subject}-1"), truth]
        form = {"sequence_ids": [f"{subject}-video", f"{subject}-truth"]}
        response = api.post(f"/galleries/{GALLERY}/subjects/{subject}/sequences", files=files, data=form)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["count"] == 2 and body["tracks"][0]["index"] == 0 and body["tracks"][1] is None
        stored = api.get(f"/galleries/{GALLERY}/sequences/{subject}-video").json()
        gei = np.round(gait_energy_image(model_frames(videos, f"{subject}-1")) * 255).astype(np.uint8)
        np.testing.assert_array_equal(image(stored["gei_png"]), gei)  # the GEI of the track embedded

    form = {"gallery": GALLERY, "k": "2"}
    [found] = api.post("/search", files=video_file(videos, "alice-1", "files"), data=form).json()["data"]
    assert [h["subject_id"] for h in found["data"]] == ["alice", "bob"]
    assert found["data"][0]["sequence_id"] == "alice-video" and found["data"][0]["score"] > 0.99
    assert found["track"]["index"] == 0 and found["track"]["strip"] is None


def test_the_preview_pairs_video_frames_with_their_silhouettes(api: TestClient, videos: Videos) -> None:
    response = api.post("/sequences/preview", files=video_file(videos, "bob-2", "files"))
    assert response.status_code == 200, response.text
    body = response.json()
    expected = model_frames(videos, "bob-2")
    np.testing.assert_array_equal(np.stack([image(uri) for uri in body["data"]]), expected)
    video = body["video"]
    assert video["track"]["silhouettes"] == body["frames"] == len(expected)
    assert len(video["frames"]) == 8
    first, last = video["track"]["frame_range"]
    for shown in video["frames"]:
        thumbnail = image(shown["image"], JPEG_PREFIX)
        assert thumbnail.shape == (SIZE[0] * THUMBNAIL_WIDTH // SIZE[1], THUMBNAIL_WIDTH, 3)
        assert first <= shown["frame"] < last and 0 <= shown["silhouette"] < body["frames"]
    assert [s["silhouette"] for s in video["frames"]] == sorted({s["silhouette"] for s in video["frames"]})


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("name", "make", "code"),
    [
        ("notes.mp4", lambda v: b"this is not a video at all", "invalid_video"),
        ("half.mp4", lambda v: truncated(v.path("alice-1").read_bytes()), "invalid_video"),
        ("empty.mp4", lambda v: v.path("empty").read_bytes(), "no_person"),
    ],
    ids=["not-a-video", "truncated", "nobody"],
)
def test_bad_videos_get_a_clear_422_and_the_server_stays_ready(
    api: TestClient, videos: Videos, name: str, make, code: str
) -> None:
    files = {"files": (name, make(videos), "video/mp4")}
    response = api.post("/embed", files=files)
    assert error_code(response, 422) == code
    assert name in response.json()["error"]["message"] or code == "no_person"
    if code == "no_person":
        assert response.json()["error"]["detail"]["tracks"] == []  # the extraction's report
    assert api.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"method": "onnx"}, "method_unavailable"),
        ({"method": "magic"}, "validation_error"),
        ({"track": "3"}, "invalid_track"),
        ({"track": "-1"}, "validation_error"),
    ],
)
def test_video_fields_are_checked(api: TestClient, videos: Videos, form: dict, code: str) -> None:
    assert error_code(api.post("/embed", files=video_file(videos, "bob-1"), data=form), 422) == code


def test_videos_over_the_limits_are_refused(tiny_artifact: Path, videos: Videos, tmp_path: Path) -> None:
    with client(tiny_artifact, tmp_path, max_video_bytes=4096, max_video_frames=20) as small:
        response = small.post("/embed", files=video_file(videos, "alice-1"))
        assert error_code(response, 413) == "video_too_large"
        assert response.json()["error"]["detail"] == {"limit_bytes": 4096}
    with client(tiny_artifact, tmp_path, max_video_frames=20) as short:
        response = short.post("/embed", files=video_file(videos, "alice-1"))
        assert error_code(response, 413) == "video_too_large" and "over the limit of 20" in response.text
        assert short.get("/readyz").status_code == 200


def test_a_video_beyond_the_busy_workers_is_refused_with_429(
    tiny_artifact: Path, videos: Videos, tmp_path: Path
) -> None:
    video = Upload("alice-1.mp4", videos.path("alice-1").read_bytes())
    sequence = Upload("frames.npy", npy_bytes(model_frames(videos, "alice-1")))

    async def scenario() -> tuple[Overloaded, int, int]:
        engine = Engine(settings_for(tiny_artifact, tmp_path, video_workers=1).engine_settings())
        await engine.start()
        try:
            first = asyncio.create_task(engine.embed([video]))
            while engine.videos_busy == 0:
                await asyncio.sleep(0.001)
            with pytest.raises(Overloaded) as refused:
                await engine.embed([video])
            [meanwhile] = await engine.embed([sequence])  # sequence files are not held up
            [done] = await first
            return refused.value, meanwhile.frames, done.frames
        finally:
            await engine.stop()

    refused, meanwhile, done = asyncio.run(scenario())
    assert refused.retry_after_s >= 1  # the service answers 429 with it as Retry-After
    assert meanwhile == done > 0

"""`gaitlu enroll --layout flat` on folders of videos: uploaded to a real server (which extracts), or
extracted locally with --offline; both give the same gallery, and a video with nobody in it is reported."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from client.api import GaitluClient
from client.enroll import Layout, scan_dataset
from engine import STORE_FILE
from gallery import LocalStore
from tests.support.cli import run_cli
from tests.support.servers import served_in_thread
from tests.support.videos import WALKS, synthetic_videos

KEY = "video-key-0123456789abcdef"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice/ and bob/ with two walks each (.mp4, one in a sub-folder), carol/ with an empty scene."""
    videos = synthetic_videos(tmp_path_factory)
    root = tmp_path_factory.mktemp("video-dataset")
    for name in WALKS:
        subject, walk = name.split("-")
        target = root / subject / ("day2" if walk == "2" else "") / f"walk{walk}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(videos.path(name), target)
    (root / "carol").mkdir()
    shutil.copy(videos.path("empty"), root / "carol" / "nobody.mp4")
    (root / "bob" / ".hidden.mp4").write_bytes(b"not looked at")
    return root


@pytest.fixture(scope="module")
def server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app with API keys, served by uvicorn in a thread; yields its URL."""
    with served_in_thread(tiny_artifact, tmp_path_factory.mktemp("video-server"), api_keys=[KEY]) as url:
        yield url


def enroll(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    """`gaitlu enroll ARGS --layout flat --json --create`: (exit code, the JSON summary)."""
    result = run_cli(capsys, "enroll", *args, "--layout", "flat", "--json", "--create")
    return result.code, result.json()


def test_videos_are_found_in_a_flat_layout(dataset: Path) -> None:
    items = scan_dataset(dataset, Layout.flat)
    assert [item.relpath for item in items] == [
        "alice/day2/walk2.mp4",
        "alice/walk1.mp4",
        "bob/day2/walk2.mp4",
        "bob/walk1.mp4",
        "carol/nobody.mp4",
    ]
    assert all(item.is_video for item in items)


def test_online_and_offline_enrollment_of_videos_agree(
    capsys, dataset: Path, server: str, tiny_artifact: Path, tmp_path: Path
) -> None:
    code, online = enroll(capsys, str(dataset), "--gallery", "walks", "--server", server, "--api-key", KEY)
    assert (code, online["enrolled"], online["skipped"]) == (1, 4, 0)  # 1: one item failed
    [failed] = online["failed"]
    assert failed["path"] == "carol/nobody.mp4" and "no_person" in failed["reason"]

    code, again = enroll(capsys, str(dataset), "--gallery", "walks", "--server", server, "--api-key", KEY)
    assert (again["enrolled"], again["skipped"], len(again["failed"])) == (0, 4, 1)  # resumable

    code, offline = enroll(
        capsys, str(dataset), "--gallery", "walks", "--offline", "--data-dir", str(tmp_path),
        "--artifact", str(tiny_artifact),
    )  # fmt: skip
    assert (code, offline["enrolled"]) == (1, 4)
    assert "nobody" in offline["failed"][0]["reason"]

    query = (dataset / "bob" / "walk1.mp4").read_bytes()
    with GaitluClient(server, KEY) as client:
        remote = client.search("walks", ("q.mp4", query), k=2).data[0].data
        vector = np.asarray(client.embed([("q.mp4", query)]).data[0].embedding, np.float32)
    with LocalStore(tmp_path / STORE_FILE) as store:
        local = store.search("walks", vector, store.get_gallery("walks").model_hash, k=2)
    assert remote[0].subject_id == "bob" and remote[0].score > 0.99  # the enrolled copy of the query
    assert [(h.subject_id, h.sequence_id) for h in local] == [(h.subject_id, h.sequence_id) for h in remote]
    assert [h.score for h in local] == pytest.approx([h.score for h in remote], abs=1e-4)

"""`gaitlu video silhouettes` end to end: files the loader reads, the sidecar, the report, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gaitlu.sequence import load_sequence
from synth import identity_for
from tests.support.cli import run_cli
from tests.support.synthetic_video import SyntheticVideo, Walker, make_video

SIZE = (120, 160)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def two_people(tmp) -> SyntheticVideo:
    walkers = [
        Walker(identity_for(0, 1), start=0, stop=34, region=(0.0, 0.5)),
        Walker(identity_for(0, 2), view_deg=270, start=14, region=(0.5, 1.0)),
    ]
    return make_video(
        tmp / "two.avi", np.random.default_rng(3), walkers=walkers, n_frames=50, size=(180, 320)
    )


def test_writes_a_pkl_the_loader_reads(tmp, capsys):
    walk = make_video(tmp / "one.mp4", np.random.default_rng(0), size=SIZE, n_frames=40)
    code, out, err = run_cli(capsys, "video", "silhouettes", walk.path, "--out", tmp / "one.pkl")
    assert code == 0, err
    seq = load_sequence(tmp / "one.pkl")
    assert seq.shape[1:] == (64, 64) and len(seq) >= 35 and seq.dtype == np.uint8
    assert "track 0: frames 0-39" in out

    code, out, _ = run_cli(capsys, "video", "silhouettes", walk.path, "--out", tmp / "one.npy", "--json")
    report = json.loads(out)
    assert code == 0 and report["chosen"] == 0 and report["video"]["frame_count"] == 40
    assert report["tracks"][0]["file"].endswith("one.npy")
    assert np.array_equal(load_sequence(tmp / "one.npy"), seq)


def test_all_tracks_writes_one_file_each_and_a_sidecar(tmp, two_people, capsys):
    out_dir = tmp / "tracks"
    code, _, err = run_cli(capsys, "video", "silhouettes", two_people.path, "--out", out_dir, "--all-tracks")
    assert code == 0, err
    sidecar = json.loads((out_dir / "tracks.json").read_text())
    written = [t for t in sidecar["tracks"] if t["file"]]
    assert len(written) == 2
    for track, (start, stop) in zip(written, two_people.frame_ranges, strict=True):
        assert abs(track["frame_range"][0] - start) <= 2 and abs(track["frame_range"][1] - stop) <= 2
        assert len(track["boxes"]) == track["frame_range"][1] - track["frame_range"][0]
        seq = load_sequence(out_dir / track["file"])
        assert len(seq) == track["quality"]["frames_kept"] == len(track["frames"])

    code, _, _ = run_cli(capsys, "video", "silhouettes", two_people.path, "--out", tmp / "longest")
    files = sorted(p.name for p in (tmp / "longest").iterdir())
    assert code == 0 and len(files) == 2 and "tracks.json" in files  # the longest track only


def test_user_errors_exit_2_with_one_line(tmp, two_people, capsys):
    text = tmp / "readme.avi"
    text.write_text("hello")
    code, _, err = run_cli(capsys, "video", "silhouettes", text, "--out", tmp / "x.pkl")
    assert code == 2 and err.startswith("error:") and "not a video file" in err and "Traceback" not in err

    code, _, err = run_cli(
        capsys, "video", "silhouettes", two_people.path, "--out", tmp / "x.pkl", "--all-tracks"
    )
    assert code == 2 and "give --out a folder" in err

    code, out, err = run_cli(
        capsys,
        "video",
        "silhouettes",
        two_people.path,
        "--out",
        tmp / "x.pkl",
        "--min-frames",
        "200",
        "--json",
    )
    assert code == 2 and "no usable walking person" in err
    assert "only" in json.loads(out)["tracks"][0]["quality"]["problems"][0]
    assert not (tmp / "x.pkl").exists()

    code, _, err = run_cli(
        capsys, "video", "silhouettes", two_people.path, "--out", tmp / "x.pkl", "--max-frames", "20"
    )
    assert code == 2 and "over the limit of 20" in err

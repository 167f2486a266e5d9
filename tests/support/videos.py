"""Small synthetic walking videos for the service, enrolment and web page tests, rendered once per run.

Every test module that needs them calls `synthetic_videos` from a session fixture: the first caller (an
xdist worker included) renders them under a lock into the run's shared temp folder, the others reuse it.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gaitlu.sequence import save_sequence
from synth import identity_for
from tests.support.synthetic_video import Walker, make_video

SIZE = (120, 160)  # (H, W): small, so extraction takes ~0.1 s
FRAMES = 48
# name -> (subject of synth identity seed 0, rng seed); two walks per person, different scenes and clothes
WALKS = {"alice-1": (1, 11), "alice-2": (1, 12), "bob-1": (2, 21), "bob-2": (2, 22)}


@dataclass(frozen=True)
class Videos:
    folder: Path

    def path(self, name: str) -> Path:
        """`name`.mp4 (a WALKS key, or "empty": the scene with nobody in it)."""
        return self.folder / f"{name}.mp4"

    def truth(self, name: str) -> Path:
        """`name`'s ground-truth masks, (T, H, W) uint8 as a .npy sequence file."""
        return self.folder / f"{name}-truth.npy"


def synthetic_videos(tmp_path_factory: pytest.TempPathFactory) -> Videos:
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # xdist: one folder per run
    videos = Videos(shared / "synthetic-videos")
    done = videos.folder / "complete"
    with open(shared / "synthetic-videos.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            videos.folder.mkdir(exist_ok=True)
            for name, (subject, seed) in WALKS.items():
                walker = Walker(identity_for(0, subject))
                made = make_video(
                    videos.path(name),
                    np.random.default_rng(seed),
                    walkers=[walker],
                    n_frames=FRAMES,
                    size=SIZE,
                )
                save_sequence(made.union, videos.truth(name))
            make_video(videos.path("empty"), np.random.default_rng(0), walkers=[], n_frames=30, size=SIZE)
            done.touch()  # written last: present means complete
    return videos

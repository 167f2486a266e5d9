"""Demo sequences for the web page: a few files in DATA_DIR/demo, rendered by the synthetic generator
(numpy + OpenCV, no torch) the first time they are asked for.

An operator may put their own sequence files in that folder instead: the generator only runs while it
holds none. Names are only ever matched against the folder's listing, never joined onto a path.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from gaitlu.preprocess import to_model_frames
from gaitlu.sequence import save_sequence

logger = logging.getLogger(__name__)

FOLDER = "demo"  # under the data dir
SUFFIXES = (".pkl", ".npy", ".npz", ".zip", ".png")  # what the upload path reads
SEED = 20240  # fixed: every server generates the same people
SUBJECTS = 4
WALKS = ("a", "b")  # two walks per person: enrol one, search with the other
VIEW_DEG = 90.0  # side view
FRAMES = 50  # two gait cycles at 25 fps
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_generating = threading.Lock()  # one generator per process; writes are atomic anyway


@dataclass(frozen=True)
class DemoFile:
    name: str
    path: Path
    size_bytes: int


def demo_folder(data_dir: Path) -> Path:
    return data_dir / FOLDER


def list_demo(folder: Path) -> list[DemoFile]:
    """The folder's sequence files, by name; hidden, oddly named and temporary files are left out."""
    if not folder.is_dir():
        return []
    return [
        DemoFile(p.name, p, p.stat().st_size)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in SUFFIXES and _NAME.fullmatch(p.name)
    ]


def generate_demo(folder: Path) -> list[Path]:
    """Render SUBJECTS synthetic people x WALKS as OpenGait .pkl files of model frames (~0.5 s)."""
    from synth import identity_for, render_sequence, sequence_rng  # the generator is only needed here

    written = []
    for subject in range(1, SUBJECTS + 1):
        identity = identity_for(SEED, subject)
        for index, walk in enumerate(WALKS):
            rng = sequence_rng(SEED, subject, index)
            frames = to_model_frames(render_sequence(identity, VIEW_DEG, "nm", FRAMES, rng))  # (T, 64, 44)
            written.append(save_sequence(frames, folder / f"walker-{subject}-{walk}.pkl"))
    logger.info("wrote %d demo sequences to %s", len(written), folder)
    return written


def ensure_demo(folder: Path) -> list[DemoFile]:
    """The demo files, generated first if the folder holds none."""
    with _generating:
        if not list_demo(folder):
            generate_demo(folder)
    return list_demo(folder)


def find_demo(folder: Path, name: str) -> DemoFile | None:
    return next((f for f in list_demo(folder) if f.name == name), None)

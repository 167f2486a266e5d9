"""Write synthetic corpora in the two on-disk layouts: labelled OpenGait (CASIA-B-like) and GaitLU-1M.

Work is split per subject over a process pool. A file's content depends only on (seed, subject,
sequence index) - not on the number of workers, the chunking, or K - so runs are byte-reproducible.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gaitlu.errors import ConfigError
from gaitlu.files import write_atomic
from gaitlu.preprocess import to_model_frames
from gaitlu.sequence import save_sequence
from synth.identity import identity_for, sequence_rng
from synth.render import CASIA_B, Capture, render_sequence

log = logging.getLogger(__name__)

VIEWS = tuple(range(0, 181, 18))  # CASIA-B's 11 views; 90 = side view
CONDITIONS = tuple([f"nm-{i:02d}" for i in range(1, 7)] + ["bg-01", "bg-02", "cl-01", "cl-02"])
OPENGAIT_SEQUENCES = tuple((cond, view) for cond in CONDITIONS for view in VIEWS)  # 110, fixed order
CASIA_B_TRAIN_FRACTION = 74 / 124
MIN_FRAMES, MAX_FRAMES, MODE_FRAMES = 30, 120, 110  # triangular: mean about 87 (CASIA-B 82, GaitLU 92)
GAITLU_CONDITIONS = ("nm", "bg", "cl")
GAITLU_CONDITION_P = (0.6, 0.25, 0.15)


def n_frames(rng: np.random.Generator) -> int:
    return round(rng.triangular(MIN_FRAMES, MODE_FRAMES, MAX_FRAMES))


def subject_name(subject: int, n_subjects: int) -> str:
    """1-based subject number, zero-padded to 3 digits (more when there are over 999 subjects)."""
    return f"{subject:0{max(3, len(str(n_subjects)))}d}"


def opengait_selection(seed: int, subject: int, k: int) -> list[int]:
    """Indices into OPENGAIT_SEQUENCES this subject gets: all 110, or a seeded per-subject subset of k."""
    if k >= len(OPENGAIT_SEQUENCES):
        return list(range(len(OPENGAIT_SEQUENCES)))
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(subject, 0, 1)))
    return sorted(rng.choice(len(OPENGAIT_SEQUENCES), size=k, replace=False).tolist())


def partition(names: list[str]) -> dict[str, list[str]]:
    """CASIA-B's split: the first 74/124 of the subjects train, the rest test (at least one each)."""
    n_train = min(max(1, round(len(names) * CASIA_B_TRAIN_FRACTION)), len(names) - 1)
    return {"TRAIN_SET": names[:n_train], "TEST_SET": names[n_train:]}


Task = tuple[Path, int, int, int, int, Capture]


def _opengait_subject(args: Task) -> int:
    out, seed, subject, n_subjects, k, capture = args
    identity = identity_for(seed, subject)
    name = subject_name(subject, n_subjects)
    picks = opengait_selection(seed, subject, k)
    for index in picks:
        cond, view = OPENGAIT_SEQUENCES[index]
        rng = sequence_rng(seed, subject, index)
        frames = render_sequence(identity, view, cond[:2], n_frames(rng), rng, capture)
        save_sequence(frames, out / name / cond / f"{view:03d}" / f"{view:03d}.pkl")
    return len(picks)


def gaitlu_path(out: Path, index: int) -> Path:
    """GaitLU-1M's tree: sequence counter 1234567 -> silhouette_cut_pkl/001/234/567/001_234_567.pkl."""
    a, b, c = index // 1_000_000, index // 1000 % 1000, index % 1000
    stem = f"{a:03d}_{b:03d}_{c:03d}"
    return out / "silhouette_cut_pkl" / f"{a:03d}" / f"{b:03d}" / f"{c:03d}" / f"{stem}.pkl"


def _gaitlu_subject(args: Task) -> int:
    out, seed, subject, _, k, capture = args
    identity = identity_for(seed, subject)
    for index in range(k):
        rng = sequence_rng(seed, subject, index)
        view = float(rng.uniform(0.0, 360.0))
        cond = str(rng.choice(GAITLU_CONDITIONS, p=GAITLU_CONDITION_P))
        frames = to_model_frames(
            render_sequence(identity, view, cond, n_frames(rng), rng, capture)
        )  # (T, 64, 44)
        save_sequence(frames, gaitlu_path(out, (subject - 1) * k + index))
    return k


def _run(job: Callable[[Task], int], tasks: list[Task], workers: int, total: int, desc: str) -> int:
    """Run per-subject tasks on a process pool (in-process for one worker) with a progress bar."""
    done = 0
    with ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers))
            results = pool.map(job, tasks, chunksize=max(1, len(tasks) // (workers * 16)))
        else:
            results = map(job, tasks)
        bar = stack.enter_context(tqdm(total=total, desc=desc, unit="seq", disable=None))
        for n in results:
            done += n
            bar.update(n)
    return done


def _check(subjects: int, sequences_per_subject: int, workers: int) -> None:
    if subjects < 1:
        raise ConfigError(f"--subjects must be at least 1, got {subjects}")
    if sequences_per_subject < 1:
        raise ConfigError(f"--sequences-per-subject must be at least 1, got {sequences_per_subject}")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")


def generate_opengait(
    out: Path,
    subjects: int,
    seed: int = 0,
    sequences_per_subject: int = 110,
    workers: int = 1,
    capture: Capture = CASIA_B,
) -> int:
    """Write a labelled CASIA-B-like set `<out>/<subject>/<cond-nn>/<view>/<view>.pkl` (64x64 frames)
    plus `<out>/partition.json`; returns the number of sequences written."""
    _check(subjects, sequences_per_subject, workers)
    if subjects < 2:
        raise ConfigError("the opengait layout needs at least 2 subjects (one train, one test)")
    out = Path(out)
    k = min(sequences_per_subject, len(OPENGAIT_SEQUENCES))
    tasks = [(out, seed, s, subjects, k, capture) for s in range(1, subjects + 1)]
    written = _run(_opengait_subject, tasks, workers, subjects * k, "synth opengait")
    names = [subject_name(s, subjects) for s in range(1, subjects + 1)]
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "partition.json", json.dumps(partition(names), indent=1) + "\n")
    log.info("wrote %d sequences of %d subjects to %s", written, subjects, out)
    return written


def generate_gaitlu(
    out: Path,
    subjects: int,
    seed: int = 0,
    sequences_per_subject: int = 4,
    workers: int = 1,
    capture: Capture = CASIA_B,
) -> int:
    """Write an unlabelled GaitLU-1M-like tree `<out>/silhouette_cut_pkl/...` (64x44 frames, random views
    and conditions, no labels anywhere); returns the number of sequences written."""
    _check(subjects, sequences_per_subject, workers)
    out = Path(out)
    k = sequences_per_subject
    if subjects * k > 1_000_000_000:
        raise ConfigError("the GaitLU tree numbers at most 10^9 sequences (3 x 3 digits)")
    tasks = [(out, seed, s, subjects, k, capture) for s in range(1, subjects + 1)]
    written = _run(_gaitlu_subject, tasks, workers, subjects * k, "synth gaitlu")
    log.info("wrote %d unlabelled sequences (%d identities) to %s", written, subjects, out)
    return written

"""Reader for labelled gait datasets in the OpenGait layout.

Layout: `<root>/<subject>/<condition>/<view>/<anything>.pkl`, one folder per sequence, plus a partition
JSON `{"TRAIN_SET": [...], "TEST_SET": [...]}` (Gait3D adds `PROBE_SET`, a list of
`<subject>-<condition>-<view>` sequence keys). Real datasets have gaps (CASIA-B subject 005 has no view
000, a few sequences are empty), so gaps are logged and skipped, never fatal: the protocols then report
what is there.

A sequence folder may hold several pkl files, one per modality (e.g. silhouettes and a parsing map in
newer OpenGait releases). We read the first one in sorted name order that loads as a silhouette
sequence, so the choice is deterministic and a broken or foreign file does not hide a good one.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gaitlu.errors import ConfigError, DataError, SequenceError, listing
from gaitlu.sequence import SequenceLimits, load_sequence

logger = logging.getLogger(__name__)

SEQUENCE_SUFFIX = ".pkl"
# Local datasets are trusted more than uploads: long sequences (Gait3D has some) load whole and the
# evaluation runner samples them down, instead of being rejected by the upload frame limit.
DATASET_LIMITS = SequenceLimits(max_frames=20_000)


@dataclass(frozen=True)
class LabelledSequence:
    """One labelled sequence: its folder and the three labels its path encodes."""

    path: Path
    subject: str
    condition: str
    view: str

    @property
    def key(self) -> str:
        """`subject-condition-view`, the form Gait3D's PROBE_SET uses."""
        return f"{self.subject}-{self.condition}-{self.view}"


@dataclass(frozen=True)
class Partition:
    """Subject ids of each split; `probe` holds Gait3D's probe sequence keys (None elsewhere)."""

    train: tuple[str, ...]
    test: tuple[str, ...]
    probe: tuple[str, ...] | None = None


def _string_list(data: dict[str, Any], key: str, path: Path) -> tuple[str, ...]:
    values = data[key]
    if not isinstance(values, list):
        raise ConfigError(f"partition {path}: {key} must be a list of ids, got {type(values).__name__}")
    bad = [v for v in values if not isinstance(v, str)]
    if bad:
        raise ConfigError(
            f'partition {path}: {key} must hold string ids (write "075", not 75); bad entries: {bad[:5]}'
        )
    return tuple(values)


def load_partition(path: str | Path) -> Partition:
    """Read and validate a partition JSON; every problem is a ConfigError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"partition file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read partition file {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"partition {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"partition {path} must be a JSON object with TRAIN_SET and TEST_SET")
    missing = [key for key in ("TRAIN_SET", "TEST_SET") if key not in data]
    if missing:
        raise ConfigError(f"partition {path} lacks {', '.join(missing)}")
    probe = _string_list(data, "PROBE_SET", path) if "PROBE_SET" in data else None
    return Partition(_string_list(data, "TRAIN_SET", path), _string_list(data, "TEST_SET", path), probe)


def _subdirs(path: Path) -> list[Path]:
    """Sorted visible subfolders; files at this level (partition.json, READMEs) are ignored."""
    with os.scandir(path) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir() and not e.name.startswith("."))


def sequence_files(folder: Path) -> list[Path]:
    """The candidate sequence files of one sequence folder, in the order they are tried."""
    return sorted(p for p in folder.iterdir() if p.suffix == SEQUENCE_SUFFIX and p.is_file())


def scan_labelled(root: str | Path, subjects: set[str] | None = None) -> list[LabelledSequence]:
    """List the sequences under `root`, sorted by (subject, condition, view) name: deterministic.

    `subjects` restricts the scan (e.g. to a partition's TEST_SET); listed subjects absent on disk are
    logged and skipped. Sequence folders without a pkl file are logged and skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    subject_dirs = _subdirs(root)
    if subjects is not None:
        on_disk = {d.name for d in subject_dirs}
        absent = sorted(subjects - on_disk)
        if absent:
            logger.warning(
                "%d subject(s) listed in the partition are not in %s, skipped: %s",
                len(absent),
                root,
                listing(absent),
            )
        subject_dirs = [d for d in subject_dirs if d.name in subjects]

    found: list[LabelledSequence] = []
    empty: list[str] = []
    for subject_dir in subject_dirs:
        for condition_dir in _subdirs(subject_dir):
            for view_dir in _subdirs(condition_dir):
                seq = LabelledSequence(view_dir, subject_dir.name, condition_dir.name, view_dir.name)
                if sequence_files(view_dir):
                    found.append(seq)
                else:
                    empty.append(seq.key)
    if empty:
        logger.warning(
            "%d sequence folder(s) without a %s file skipped: %s",
            len(empty),
            SEQUENCE_SUFFIX,
            listing(empty),
        )
    return found


def read_labelled(seq: LabelledSequence) -> np.ndarray:
    """Load a sequence: the first pkl (sorted by name) that loads. Raises SequenceError if none does."""
    errors = []
    for path in sequence_files(seq.path):
        try:
            return load_sequence(path, limits=DATASET_LIMITS)
        except SequenceError as exc:
            errors.append(f"{path.name}: {exc}")
    reason = "; ".join(errors) if errors else f"no {SEQUENCE_SUFFIX} file"
    raise SequenceError(f"sequence {seq.key} ({seq.path}) could not be read: {reason}")

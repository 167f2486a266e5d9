"""`gaitlu data index`: read every file of a GaitLU-style tree once and record what it holds.

Files are read in batches by a process pool; each finished batch is appended to the manifest and
fsynced, so an interrupted run resumes with the files not yet listed. Bad files are recorded with a
status and reason (see corpus.checks) and never stop the run.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from corpus.checks import DEFAULT_MIN_FRAMES, BadFile, load_checked
from corpus.layout import iter_relpaths, sequence_id, tree_root
from corpus.manifest import ManifestWriter, read_manifest
from corpus.parallel import run_tasks
from gaitlu.errors import DataError

logger = logging.getLogger(__name__)

BATCH_FILES = 256  # files per pool task and per fsynced manifest commit


@dataclass
class IndexSummary:
    """Totals over the whole manifest (earlier runs included); `new` counts files read by this run."""

    manifest: Path
    files: int
    new: int
    counts: Counter[str]
    frames: int
    bad: list[dict[str, Any]] = field(default_factory=list)


def _index_batch(task: tuple[str, list[str], int]) -> list[dict[str, Any]]:
    root, relpaths, min_frames = task
    records = []
    for rel in relpaths:
        record: dict[str, Any] = {"path": rel, "id": sequence_id(rel)}
        try:
            _, info = load_checked(Path(root, rel), min_frames)
        except BadFile as bad:
            record.update(status=bad.status, reason=bad.reason)
        else:
            record.update(status="ok", **vars(info))
        records.append(record)
    return records


def index_tree(
    root: Path,
    manifest: Path,
    *,
    workers: int = 1,
    min_frames: int = DEFAULT_MIN_FRAMES,
    progress: bool = False,
) -> IndexSummary:
    """Index the tree at `root` into `manifest` (created, or resumed when it exists); return the totals."""
    root = tree_root(root).resolve()
    manifest = Path(manifest)
    totals = _Totals()
    if manifest.exists() and manifest.stat().st_size:
        header, records = read_manifest(manifest)
        if header.get("min_frames") != min_frames:
            raise DataError(
                f"{manifest} was built with --min-frames {header.get('min_frames')}; "
                f"resume with the same value or write a new manifest"
            )
        for record in records:
            totals.add(record)
    logger.info("listing %s", root)
    todo = [rel for rel in iter_relpaths(root) if rel not in totals.paths]
    logger.info("%d files already indexed, %d to read", len(totals.paths), len(todo))
    tasks = ((str(root), todo[i : i + BATCH_FILES], min_frames) for i in range(0, len(todo), BATCH_FILES))
    with (
        ManifestWriter(manifest, {"root": str(root), "min_frames": min_frames}) as writer,
        tqdm(total=len(todo), unit="file", disable=not progress, desc="index") as bar,
    ):
        for batch in run_tasks(_index_batch, tasks, workers):
            for record in batch:
                if record["status"] == "ok" and record["id"] in totals.ids:
                    record = {
                        "path": record["path"],
                        "id": record["id"],
                        "status": "duplicate",
                        "reason": "sequence id seen before",
                    }
                writer.add(record)
                totals.add(record)
            writer.commit()
            bar.update(len(batch))
    return IndexSummary(
        manifest=manifest,
        files=len(totals.paths),
        new=len(todo),
        counts=totals.counts,
        frames=totals.frames,
        bad=totals.bad,
    )


@dataclass
class _Totals:
    """Running totals over manifest records, kept small: sets of keys, not the records."""

    paths: set[str] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)  # of usable sequences, to catch duplicates
    counts: Counter[str] = field(default_factory=Counter)
    frames: int = 0
    bad: list[dict[str, Any]] = field(default_factory=list)

    def add(self, record: dict[str, Any]) -> None:
        self.paths.add(record["path"])
        self.counts[record["status"]] += 1
        if record["status"] == "ok":
            self.ids.add(record["id"])
            self.frames += record["frames"]
        else:
            self.bad.append(record)

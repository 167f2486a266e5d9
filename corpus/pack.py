"""`gaitlu data pack`: pack a GaitLU-style tree into shard files plus a top-level `index.json`.

The plan is deterministic: the usable files in sorted path order, cut into shards of `shard_size`
files. Each shard records a digest of its planned paths, so a rerun skips every shard that is already
complete for the same plan and rebuilds only the missing or stale ones (shards are independent tasks,
packed in parallel). `index.json` is written last, atomically: its presence means a finished pack.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from corpus import codec
from corpus.checks import DEFAULT_MIN_FRAMES, HEIGHT, WIDTH, BadFile, load_checked
from corpus.layout import iter_relpaths, sequence_id, tree_root
from corpus.manifest import read_manifest
from corpus.parallel import run_tasks
from corpus.shard import FORMAT_VERSION, ShardStats, load_footer, shard_name, write_shard
from gaitlu.errors import DataError
from gaitlu.files import write_atomic

logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"
INDEX_FORMAT = "gaitlu-shards"
DEFAULT_SHARD_SIZE = 2048  # sequences per shard: ~66 MB packbits files for 92-frame GaitLU sequences
_INDEX_TOTALS = (
    "sequences",
    "frames",
    "bytes",
    "source_bytes",
    "source_disk_bytes",
    "nonbinary_pixels",
    "nonbinary_sequences",
)


@dataclass
class PackSummary:
    """What `pack_corpus` did; byte totals compare the shards with the source pickles."""

    out: Path
    shards: int
    packed_shards: int  # built by this run (the rest were complete already)
    sequences: int
    frames: int
    bytes: int
    source_bytes: int
    source_disk_bytes: int
    nonbinary_pixels: int
    nonbinary_sequences: int
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def size_ratio(self) -> float:
        """Source pickles' allocated disk bytes per shard byte."""
        return self.source_disk_bytes / max(self.bytes, 1)

    @property
    def nonbinary_fraction(self) -> float:
        return self.nonbinary_pixels / max(self.frames * HEIGHT * WIDTH, 1)


def _plan_digest(relpaths: list[str]) -> str:
    return hashlib.sha256("\n".join(relpaths).encode("utf-8")).hexdigest()


def _pack_shard(task: tuple[int, str, str, list[str], int, str]) -> tuple[int, ShardStats]:
    number, root, out_path, relpaths, min_frames, codec_name = task
    meta: dict[str, Any] = {"plan_digest": _plan_digest(relpaths), "source_bytes": 0, "source_disk_bytes": 0}
    skipped: list[dict[str, str]] = []

    def usable() -> Iterator[tuple[str, np.ndarray]]:
        for rel in relpaths:
            try:
                seq, info = load_checked(Path(root, rel), min_frames)
            except BadFile as bad:
                skipped.append({"path": rel, "status": bad.status, "reason": bad.reason})
                continue
            meta["source_bytes"] += info.bytes
            meta["source_disk_bytes"] += info.disk_bytes
            yield sequence_id(rel), seq
        meta["skipped"] = skipped

    path = Path(out_path)
    footer = write_shard(path, usable(), meta, codec_name)
    return number, ShardStats.from_footer(path, footer)


def _complete_shard(path: Path, relpaths: list[str], codec_name: str) -> ShardStats | None:
    """Stats of an existing shard built from exactly `relpaths` with `codec_name`, else None: (re)build it."""
    if not path.exists():
        return None
    try:
        footer = load_footer(path)
    except (DataError, OSError, ValueError) as exc:
        logger.warning("rebuilding %s: %s", path.name, exc)
        return None
    if footer.meta.get("plan_digest") != _plan_digest(relpaths) or footer.meta["codec"] != codec_name:
        logger.warning("rebuilding %s: it was packed from other files or with another codec", path.name)
        return None
    return ShardStats.from_footer(path, footer)


def _plan_inputs(root: Path, manifest: Path | None) -> tuple[list[str], list[dict[str, str]], int]:
    """Sorted usable relative paths, the files left out up front, and the minimum frame count."""
    skipped: list[dict[str, str]] = []
    if manifest is None:
        candidates, min_frames = list(iter_relpaths(root)), DEFAULT_MIN_FRAMES
    else:
        header, records = read_manifest(manifest)
        if Path(header["root"]).resolve() != root:
            logger.warning("manifest root %s differs from %s; using %s", header["root"], root, root)
        min_frames = int(header["min_frames"])
        candidates = []
        for record in records:
            if record["status"] == "ok":
                candidates.append(record["path"])
            else:
                skipped.append({k: record[k] for k in ("path", "status", "reason")})
        candidates.sort()
    seen: set[str] = set()
    relpaths = []
    for rel in candidates:
        seq_id = sequence_id(rel)
        if seq_id in seen:
            skipped.append(
                {"path": rel, "status": "duplicate", "reason": f"sequence id {seq_id} seen before"}
            )
            continue
        seen.add(seq_id)
        relpaths.append(rel)
    return relpaths, skipped, min_frames


def pack_corpus(
    root: Path,
    out: Path,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int = 1,
    manifest: Path | None = None,
    codec_name: str = codec.DEFAULT_CODEC,
    progress: bool = False,
) -> PackSummary:
    """Pack the tree at `root` (or the `ok` files of `manifest`) into shards under `out`; resumable."""
    if shard_size < 1:
        raise DataError("--shard-size must be at least 1")
    codec.check_codec(codec_name)
    root = tree_root(root).resolve()
    out = Path(out)
    relpaths, skipped, min_frames = _plan_inputs(root, manifest)
    plan = [relpaths[i : i + shard_size] for i in range(0, len(relpaths), shard_size)]
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / INDEX_NAME
    index_path.unlink(missing_ok=True)  # a partial pack must not look finished
    stats: dict[int, ShardStats] = {}
    tasks = []
    for number, chunk in enumerate(plan):
        path = out / shard_name(number)
        done = _complete_shard(path, chunk, codec_name)
        if done is None:
            tasks.append((number, str(root), str(path), chunk, min_frames, codec_name))
        else:
            stats[number] = done
    logger.info("%d shards planned, %d complete, %d to pack", len(plan), len(stats), len(tasks))
    with tqdm(total=len(plan), initial=len(stats), unit="shard", disable=not progress, desc="pack") as bar:
        for number, shard in run_tasks(_pack_shard, tasks, workers):
            stats[number] = shard
            bar.update(1)
    ordered = [stats[n] for n in range(len(plan))]
    for shard in ordered:
        skipped.extend(shard.skipped)
    summary = PackSummary(
        out=out,
        shards=len(ordered),
        packed_shards=len(tasks),
        sequences=sum(s.count for s in ordered),
        frames=sum(s.frames for s in ordered),
        bytes=sum(s.bytes for s in ordered),
        source_bytes=sum(s.source_bytes for s in ordered),
        source_disk_bytes=sum(s.source_disk_bytes for s in ordered),
        nonbinary_pixels=sum(s.nonbinary_pixels for s in ordered),
        nonbinary_sequences=sum(s.nonbinary_sequences for s in ordered),
        skipped=skipped,
    )
    _write_index(index_path, summary, ordered, shard_size, codec_name)
    return summary


def _write_index(
    path: Path, summary: PackSummary, shards: list[ShardStats], shard_size: int, codec_name: str
) -> None:
    index: dict[str, Any] = {
        "format": INDEX_FORMAT,
        "format_version": FORMAT_VERSION,
        "codec": codec_name,
        "threshold": codec.THRESHOLD,
        "shard_size": shard_size,
        **{key: getattr(summary, key) for key in _INDEX_TOTALS},
        "shards": [{k: v for k, v in asdict(s).items() if k != "skipped"} for s in shards],
        "skipped": summary.skipped,
    }
    write_atomic(path, json.dumps(index, indent=1))


def load_index(path: Path) -> dict[str, Any]:
    """The parsed `index.json` of a finished pack; DataError when it is missing or not ours."""
    try:
        index = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"{path} not found: not a packed corpus, or `gaitlu data pack` did not finish"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable shard index ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise DataError(f"{path}: not a {INDEX_FORMAT} index")
    if index.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: shard format version {index.get('format_version')}, this gaitlu reads {FORMAT_VERSION}"
        )
    return index

"""`gaitlu data verify`: check every shard against `index.json` and name the sequences any damage touches.

Per shard: present, the listed size, the listed sha256. A shard whose hash differs is examined
further: when its footer still parses, each record's crc32 pins the damage to sequences; when it does
not (truncation, a damaged footer), the whole shard is affected, named by the id range index.json
lists. One bad shard never stops the check of the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from corpus.pack import INDEX_NAME, load_index
from corpus.shard import load_footer, read_payload
from gaitlu.errors import DataError, listing
from gaitlu.files import sha256_file


@dataclass
class ShardProblem:
    """One damaged shard: what is wrong and which sequences cannot be trusted."""

    shard: str
    problem: str
    affected_count: int
    affected_ids: list[str] = field(default_factory=list)  # exact ids when known
    affected_range: tuple[str, str] | None = None  # first..last id (in sorted order) otherwise

    def describe(self) -> str:
        if self.affected_ids:
            where = f"{self.affected_count} sequences: {listing(self.affected_ids)}"
        elif self.affected_range:
            where = (
                f"all {self.affected_count} sequences {self.affected_range[0]} .. {self.affected_range[1]}"
            )
        else:
            where = "no sequence record is damaged"
        return f"{self.shard}: {self.problem}; {where}"


@dataclass
class VerifyReport:
    shards: int
    sequences: int
    problems: list[ShardProblem]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def affected_sequences(self) -> int:
        return sum(p.affected_count for p in self.problems)


def _whole_shard(listed: dict[str, Any], problem: str) -> ShardProblem:
    first, last = listed.get("first_id"), listed.get("last_id")
    return ShardProblem(
        listed["name"], problem, listed["count"], affected_range=(first, last) if first and last else None
    )


def verify_shard(root: Path, listed: dict[str, Any]) -> ShardProblem | None:
    """None when the shard matches its index entry, else what is wrong with it."""
    path = root / listed["name"]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return _whole_shard(listed, "missing")
    except OSError as exc:
        return _whole_shard(listed, f"cannot read ({exc.strerror})")
    if size == listed["bytes"] and sha256_file(path) == listed["sha256"]:
        return None
    problem = f"{size} bytes, index lists {listed['bytes']}" if size != listed["bytes"] else "sha256 mismatch"
    if size < listed["bytes"]:
        problem = f"truncated ({problem})"
    try:
        footer = load_footer(path)
    except (DataError, OSError, ValueError) as exc:
        return _whole_shard(listed, f"{problem}; footer unreadable: {exc}")
    if len(footer.ids) != listed["count"]:
        return _whole_shard(
            listed, f"{problem}; footer lists {len(footer.ids)} sequences, index {listed['count']}"
        )
    bad = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for seq_id, entry in zip(footer.ids, footer.entries, strict=True):
            try:
                read_payload(fd, entry, path.name)
            except DataError:
                bad.append(seq_id)
    finally:
        os.close(fd)
    return ShardProblem(listed["name"], problem, len(bad), affected_ids=bad)


def verify_shards(path: Path, progress: bool = False) -> VerifyReport:
    """Check all shards listed by `path`/index.json; DataError only when the index itself is unusable."""
    path = Path(path)
    root = path.parent if path.name == INDEX_NAME else path
    index = load_index(root / INDEX_NAME)
    problems = []
    shards = index["shards"]
    for listed in tqdm(shards, unit="shard", disable=not progress, desc="verify"):
        problem = verify_shard(root, listed)
        if problem is not None:
            problems.append(problem)
    counted = sum(s["count"] for s in shards)
    if counted != index["sequences"]:
        problems.append(
            ShardProblem(
                INDEX_NAME, f"shards hold {counted} sequences, the index total is {index['sequences']}", 0
            )
        )
    return VerifyReport(shards=len(shards), sequences=index["sequences"], problems=problems)

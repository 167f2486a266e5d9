"""The corpus manifest: an append-only JSON-lines file, one line per file of the tree.

Line 1 is a header `{"gaitlu_manifest": 1, "root": "/abs/tree", "min_frames": 10}`; every other line
is one file, keyed by its path relative to the root:

    {"path": "000/000/000/000_000_000.pkl", "id": "000_000_000", "status": "ok",
     "frames": 92, "height": 64, "width": 44, "bytes": 259236, "disk_bytes": 262144}
    {"path": "000/000/001/000_000_001.pkl", "id": "000_000_001", "status": "malicious", "reason": "..."}

Appending in fsynced batches makes indexing resumable: after a crash every complete line is a file
that need not be read again, and a torn last line (the only damage an interrupted append can do) is
cut off when the manifest is reopened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from gaitlu.errors import DataError

MANIFEST_VERSION = 1


def read_manifest(path: Path) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """The header and a lazy iterator over the records (a million lines need not sit in memory at once).

    A torn (unterminated) last line is skipped; any other malformed line is a DataError.
    """
    lines = _complete_lines(Path(path))
    first = next(lines, None)
    header = _parse(path, 1, first) if first is not None else None
    if not isinstance(header, dict) or header.get("gaitlu_manifest") != MANIFEST_VERSION:
        raise DataError(f"{path}: not a gaitlu manifest (version {MANIFEST_VERSION} header missing)")
    return header, (_parse(path, number, line) for number, line in enumerate(lines, 2))


def _complete_lines(path: Path) -> Iterator[str]:
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115 (closed by the generator below)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None

    def lines() -> Iterator[str]:
        with f:
            try:
                for line in f:
                    if line.endswith("\n"):  # the part after the last newline is a torn append
                        yield line
            except UnicodeDecodeError:
                raise DataError(f"{path}: not a text manifest (invalid utf-8)") from None

    return lines()


def _parse(path: Path, number: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{number}: not a manifest line ({exc})") from None


class ManifestWriter:
    """Appends records; `commit` makes everything added so far durable (flush + fsync)."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self._path = Path(path)
        if self._path.exists():
            _drop_torn_tail(self._path)
        if self._path.exists() and self._path.stat().st_size:
            self._file: IO[str] = open(self._path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        else:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._path, "w", encoding="utf-8")  # noqa: SIM115
            self.add({"gaitlu_manifest": MANIFEST_VERSION, **header})
            self.commit()

    def add(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self.commit()
        self._file.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_torn_tail(path: Path) -> None:
    """Cut the file back to its last newline (an interrupted append leaves at most one partial line)."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        block = 4096
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                f.truncate(start + newline + 1)
                return
            pos = start
        f.truncate(0)

"""Files written whole or not at all, and file hashes: one helper each, used by every stage.

Atomic writes (`atomic_write`, `write_atomic`): the content goes to a temporary file in the target's
folder, is flushed and fsynced, then renamed over the target (`os.replace`), and the folder is fsynced so
that the rename is durable too. A reader sees the old file or the new one, never part of one, and after a
crash or a power cut the target holds one of the two. This is the one fsync policy of the project: what
is written this way (manifests, checkpoints, index snapshots, shards, reports, partitions) is written
seldom and costly to lose, so two fsyncs per file are worth it. The one exception is bulk output that
can be made again, many small files at a time (the sequence files of a synthetic set or of a video
extraction, `gaitlu.sequence.save_sequence`): there the two fsyncs (about 25 ms per file measured on the
development machine, 30x the write itself) would dominate, so `durable=False` skips them; a reader still
never sees part of a file, but a power cut may lose the newest ones.

Files get mode 0644, as a plain `open` under the usual umask would give them (`mkstemp` alone makes them
0600, which a service running as another user could not read); a secret (an API key) asks for 0600 with
`permissions=SECRET_MODE`. The mode is set on the temporary file as it is created, before any byte is
written, so no version of a file, whole or partial, is ever readable more widely than its final mode.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o644
SECRET_MODE = 0o600  # owner only: keys, tokens


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Make the entries of `folder` (a rename into it) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "wb",
    *,
    encoding: str | None = None,
    newline: str | None = None,
    durable: bool = True,
    permissions: int = FILE_MODE,
    exclusive: bool = False,
) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing; on a clean exit it replaces `path` (see the module
    docstring), on an exception it is removed and `path` is left as it was. Parent folders are created.
    `durable=False` skips the fsyncs (regenerable bulk output only, see the module docstring).
    `permissions`: the file's mode, from its creation on (SECRET_MODE for a secret). `exclusive`: made
    once, never replaced: FileExistsError (and `path` as it was) when it exists by then."""
    if "w" not in mode:
        raise ValueError(f"atomic_write needs a write mode, not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, permissions)  # before the first byte: never wider than the final mode
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)  # FileExistsError when another writer got there first
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(path.parent)


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | str,
    *,
    durable: bool = True,
    permissions: int = FILE_MODE,
    exclusive: bool = False,
) -> Path:
    """Write `data` (bytes, or text as UTF-8) to `path` atomically, with mode `permissions` (and only if
    it does not exist, `exclusive`: see `atomic_write`); returns the path."""
    text = isinstance(data, str)
    with atomic_write(
        path,
        "w" if text else "wb",
        encoding="utf-8" if text else None,
        durable=durable,
        permissions=permissions,
        exclusive=exclusive,
    ) as f:
        f.write(data)
    return Path(path)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file's content, read in blocks (constant memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()

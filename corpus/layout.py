"""The GaitLU-1M tree on disk: where it starts, which files are sequences, what they are called.

`silhouette_cut_pkl/<3d>/<3d>/<3d>/<a>_<b>_<c>.pkl`, one pickled (T, 64, 44) uint8 array per file.
A sequence is named by its file stem (`000_000_000`): in GaitLU-1M the stem repeats the folders, so
it is unique; the indexer and packer report any duplicate instead of guessing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from gaitlu.errors import DataError

TREE_DIR = "silhouette_cut_pkl"
SUFFIX = ".pkl"


def tree_root(path: Path) -> Path:
    """The folder the relative paths start from: `path` itself, or its `silhouette_cut_pkl` child."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a directory")
    child = path / TREE_DIR
    return child if child.is_dir() else path


def iter_relpaths(root: Path) -> Iterator[str]:
    """Every `*.pkl` below `root` as a posix path relative to it, in sorted order (deterministic plans).

    Sorted per folder while walking, so a million files stream without sorting them all at once.
    """

    def walk(folder: str) -> Iterator[str]:
        with os.scandir(os.path.join(root, folder) if folder else root) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = f"{folder}/{entry.name}" if folder else entry.name
            if entry.is_dir(follow_symlinks=False):
                yield from walk(rel)
            elif entry.name.endswith(SUFFIX) and (entry.is_file() or _dangling(entry)):
                yield rel  # a dangling link is listed so that it is reported as unreadable

    yield from walk("")


def _dangling(entry: os.DirEntry[str]) -> bool:
    return entry.is_symlink() and not os.path.exists(entry.path)


def sequence_id(relpath: str) -> str:
    """`000/000/000/000_000_000.pkl` -> `000_000_000`."""
    return relpath.rsplit("/", 1)[-1].removesuffix(SUFFIX)

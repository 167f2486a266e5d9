"""Read a GaitLU-style corpus for training, from shards or from the plain pickle tree, with one API.

`open_corpus(path)` returns a `ShardedCorpus` for a `gaitlu data pack` output and a `TreeCorpus` for a
`silhouette_cut_pkl` tree or a `gaitlu data index` manifest. Both give `len()`, `ids`, random access
`get(id_or_index) -> (T, 64, 44) uint8`, and a per-epoch partition of the sequences over DDP ranks x
data-loader workers (`epoch_indices`, `iter_sequences`) that visits every sequence exactly once per
epoch. Nothing here imports torch: the train stage wraps `iter_sequences` in an IterableDataset and
passes plain ints for rank, world size, worker id and worker count.

Shard reads use `os.pread` on descriptors opened lazily per process: no seek state is shared, so
forked workers may inherit them; pickling a corpus (spawned workers) drops them and they reopen.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from corpus.checks import BadFile, load_checked
from corpus.layout import iter_relpaths, sequence_id, tree_root
from corpus.manifest import read_manifest
from corpus.pack import INDEX_NAME, load_index
from corpus.shard import ENTRY_DTYPE, ShardFooter, decode_entry, load_footer, read_payload
from gaitlu.errors import DataError

logger = logging.getLogger(__name__)


def epoch_indices(
    n: int,
    epoch: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    worker_id: int = 0,
    num_workers: int = 1,
    drop_last: bool = False,
) -> np.ndarray:
    """This (rank, worker)'s share of a shuffle of range(n) fixed by (seed, epoch).

    All world_size x num_workers slots draw the same permutation and take every total-th element from
    their own offset, so each index appears exactly once across slots and shares differ by at most one.
    `drop_last` trims the permutation to a multiple of the slot count, for DDP loops that need equal
    step counts on every rank (the dropped indices change with the epoch).
    """
    if not (0 <= rank < world_size and 0 <= worker_id < num_workers):
        raise ValueError(
            f"need 0 <= rank < world_size and 0 <= worker_id < num_workers, got "
            f"rank={rank} world_size={world_size} worker_id={worker_id} num_workers={num_workers}"
        )
    if seed < 0 or epoch < 0:
        raise ValueError("seed and epoch must be non-negative")
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    slots = world_size * num_workers
    if drop_last:
        perm = perm[: n - n % slots]
    return perm[rank * num_workers + worker_id :: slots]


class Corpus(ABC):
    """Random access and epoch iteration over sequences named by `ids` (unique, in storage order)."""

    ids: np.ndarray  # (n,) str

    def __len__(self) -> int:
        return len(self.ids)

    @abstractmethod
    def _read(self, index: int) -> np.ndarray:
        """The (T, 64, 44) uint8 frames of sequence `index`."""

    def index_of(self, seq_id: str) -> int:
        """Position of `seq_id` in `ids`; DataError when the corpus has no such sequence."""
        order, sorted_ids = self._id_lookup
        pos = int(np.searchsorted(sorted_ids, seq_id))
        if pos == len(sorted_ids) or sorted_ids[pos] != seq_id:
            raise DataError(f"no sequence {seq_id!r} in this corpus")
        return int(order[pos])

    @cached_property
    def _id_lookup(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.ids, kind="stable")
        return order, self.ids[order]

    def get(self, key: int | str) -> np.ndarray:
        """Frames of the sequence with this id (str) or position (int)."""
        if isinstance(key, str):
            return self._read(self.index_of(key))
        index = int(key)
        if not -len(self) <= index < len(self):
            raise IndexError(f"sequence index {index} out of range for {len(self)} sequences")
        return self._read(index % len(self))

    def epoch_indices(
        self,
        epoch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        worker_id: int = 0,
        num_workers: int = 1,
        drop_last: bool = False,
    ) -> np.ndarray:
        """See the module function `epoch_indices`."""
        return epoch_indices(len(self), epoch, seed, rank, world_size, worker_id, num_workers, drop_last)

    def iter_sequences(
        self,
        epoch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        worker_id: int = 0,
        num_workers: int = 1,
        drop_last: bool = False,
    ) -> Iterator[tuple[str, np.ndarray]]:
        """(id, frames) for this (rank, worker)'s share of the epoch, in shuffled order."""
        for index in self.epoch_indices(epoch, seed, rank, world_size, worker_id, num_workers, drop_last):
            yield str(self.ids[index]), self._read(int(index))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_fds", None)  # descriptors do not survive pickling; reopened on demand
        return state


class ShardedCorpus(Corpus):
    """Sequences packed by `gaitlu data pack`: all shard footers are read at open, records on demand.

    Integrity at rest is `gaitlu data verify`'s job; `check_crc=True` also checks each record's crc32 on
    every read, which costs about 40% of a read (hashing 32 KB vs unpacking it).
    """

    def __init__(self, path: str | os.PathLike[str], check_crc: bool = False) -> None:
        path = Path(path)
        self.root = path.parent if path.name == INDEX_NAME else path
        self.check_crc = check_crc
        index = load_index(self.root / INDEX_NAME)
        self.shard_names: list[str] = [s["name"] for s in index["shards"]]
        self.codecs: list[str] = []  # per shard
        tables, ids, shard_of = [], [], []
        for number, listed in enumerate(index["shards"]):
            footer = self._read_footer(number)
            if len(footer.ids) != listed["count"]:
                raise DataError(
                    f"{listed['name']}: holds {len(footer.ids)} sequences, index.json lists "
                    f"{listed['count']}; run `gaitlu data verify`"
                )
            self.codecs.append(footer.meta["codec"])
            tables.append(footer.entries)
            ids.extend(footer.ids)
            shard_of.append(np.full(len(footer.ids), number, dtype=np.int32))
        self.entries = np.concatenate(tables) if tables else np.zeros(0, dtype=ENTRY_DTYPE)
        self.ids = np.array(ids, dtype=str)
        self.shard_of = np.concatenate(shard_of) if shard_of else np.zeros(0, dtype=np.int32)
        self.frames = self.entries["frames"].astype(np.int64)
        self._fds: dict[int, int] = {}

    def _read_footer(self, number: int) -> ShardFooter:
        path = self.root / self.shard_names[number]
        try:
            return load_footer(path)
        except OSError as exc:
            raise DataError(f"{path}: cannot open shard ({exc.strerror}); run `gaitlu data verify`") from None

    def _fd(self, number: int) -> int:
        fds: dict[int, int] = self.__dict__.setdefault("_fds", {})  # shard number -> open descriptor
        if number not in fds:
            path = self.root / self.shard_names[number]
            try:
                fds[number] = os.open(path, os.O_RDONLY)
            except OSError as exc:
                raise DataError(f"{path}: cannot open shard ({exc.strerror})") from None
        return fds[number]

    def _read(self, index: int) -> np.ndarray:
        entry = self.entries[index]
        number = int(self.shard_of[index])
        payload = read_payload(self._fd(number), entry, self.shard_names[number], check=self.check_crc)
        return decode_entry(payload, entry, self.codecs[number])

    def close(self) -> None:
        for fd in self.__dict__.get("_fds", {}).values():
            os.close(fd)
        self._fds = {}

    def __enter__(self) -> ShardedCorpus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TreeCorpus(Corpus):
    """The per-file pickle tree, listed by walking it or from a manifest's `ok` records."""

    def __init__(self, path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> None:
        path = Path(path)
        if path.is_file():
            header, records = read_manifest(path)
            self.root = Path(root) if root is not None else Path(header["root"])
            relpaths = sorted(r["path"] for r in records if r["status"] == "ok")
        else:
            self.root = tree_root(path)
            relpaths = list(iter_relpaths(self.root))
        keep: dict[str, str] = {}
        for rel in relpaths:
            if keep.setdefault(sequence_id(rel), rel) != rel:
                logger.warning(
                    "%s: duplicate sequence id, ignored in favour of %s", rel, keep[sequence_id(rel)]
                )
        self.relpaths = list(keep.values())
        self.ids = np.array(list(keep), dtype=str)

    def _read(self, index: int) -> np.ndarray:
        rel = self.relpaths[index]
        try:
            seq, _ = load_checked(self.root / rel, min_frames=1)
        except BadFile as bad:
            raise DataError(f"{self.root / rel}: {bad.status}: {bad.reason}") from None
        return seq


def open_corpus(path: str | os.PathLike[str]) -> Corpus:
    """A packed corpus (folder with index.json, or the index.json) or a tree (folder or manifest file)."""
    path = Path(path)
    if (path / INDEX_NAME).is_file() or path.name == INDEX_NAME:
        return ShardedCorpus(path)
    if path.is_dir() or path.is_file():
        return TreeCorpus(path)
    raise DataError(f"{path}: no such corpus (expected a shard folder, a pickle tree or a manifest)")

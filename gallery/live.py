"""The local store's live indexes: each gallery's FAISS index, id map and attributes, in step with SQLite.

`LiveIndexes` holds a `Live` per gallery (gallery/store.py looks them up by name) and keeps it in step
with the commits the store makes (`apply`, `erased`), under the database's write lock. It opens a
gallery from its index snapshot when the snapshot's tag matches the database, else builds the index
from SQLite; it retrains in a background thread per gallery (`start_rebuild`: from a consistent SQLite
snapshot, off the write lock, with the changes committed meanwhile logged and replayed before the swap),
and writes snapshots (`save_snapshot`) tagged with the database state they reflect. Searches take a
gallery's read lock (`Live.lock`), so they never see an index mid-change.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gaitlu.embedding import EmbeddingLayout
from gallery.attributes import AttributeTable
from gallery.database import Database, SequenceMap
from gallery.errors import StoreClosedError
from gallery.filters import SequenceAttributes
from gallery.index import GalleryIndex, Kind
from gallery.records import GalleryPolicy, GalleryStats, SequenceInfo
from gallery.rwlock import ReadWriteLock
from gallery.settings import IndexSettings

logger = logging.getLogger(__name__)

# row ids, vectors (n, D), subject, infos, their filterable keys (checked at enrolment)
Added = tuple[np.ndarray, np.ndarray, str, list[SequenceInfo], list[SequenceAttributes]]


@dataclass
class Live:
    """A gallery's in-memory side: its index and the id -> (subject, sequence) map, both under `lock`."""

    id: int
    name: str
    model_hash: str
    layout: EmbeddingLayout
    index: GalleryIndex
    sequences: SequenceMap  # index id -> (subject_id, sequence_id)
    subject_sizes: Counter[str]
    saved_tag: dict[str, Any] | None = None  # the tag of the last snapshot written or read
    lock: ReadWriteLock = field(default_factory=ReadWriteLock)
    # While an index is rebuilt aside: the changes committed since its snapshot, to replay onto it.
    pending: list[Change] | None = None
    # What filters select on (gallery.attributes), kept in step with SQLite by `apply` like the map.
    attributes: AttributeTable = field(default_factory=AttributeTable)
    policy: GalleryPolicy = field(default_factory=GalleryPolicy)  # as in SQLite; set under the write lock


@dataclass(frozen=True)
class Change:
    """One committed change to a gallery's index and map: rows added (with their vectors), rows removed."""

    add: Added | None = None
    remove: np.ndarray | None = None

    def apply(self, index: GalleryIndex, sequences: SequenceMap, sizes: Counter[str]) -> None:
        if self.add is not None:
            ids, vectors, subject_id, infos, _ = self.add
            index.add(ids, vectors)
            for row, info in zip(ids.tolist(), infos, strict=True):
                sequences[row] = (subject_id, info.sequence_id)
            sizes[subject_id] += len(ids)
        if self.remove is not None and len(self.remove):
            index.remove(self.remove)
            for row in self.remove.tolist():
                subject_id, _ = sequences.pop(row)
                sizes[subject_id] -= 1
                if not sizes[subject_id]:
                    del sizes[subject_id]

    def update(self, table: AttributeTable) -> None:
        """Apply the change to a gallery's attribute table (as `apply` does to its map)."""
        if self.add is not None:
            ids, _, subject_id, infos, found = self.add
            table.add(ids.tolist(), subject_id, [info.sequence_id for info in infos], found)
        if self.remove is not None and len(self.remove):
            table.remove(self.remove.tolist())


class _Abandoned(Exception):
    """A rebuild in the background stops: the store is closing or the gallery was deleted."""


class LiveIndexes:
    """Every gallery's `Live`, by name, over one `Database`. Its methods that change a gallery run with
    the database's write lock held (the store's writes), except the background rebuilds, which take it
    themselves."""

    def __init__(
        self, db: Database, settings: IndexSettings, centres: dict[str, np.ndarray], snapshots: Path
    ) -> None:
        self.db = db
        self.settings = settings
        self.centres = centres  # model hash -> (parts, part_dim) centre
        self.snapshots = snapshots
        self.galleries: dict[str, Live] = {}
        self.builders: dict[int, threading.Thread] = {}  # gallery id -> its rebuild in the background
        self.closing = False  # set by the store's close: rebuilds stop, none start

    # ----- galleries

    def open(
        self, gallery_id: int, name: str, model_hash: str, layout: EmbeddingLayout, policy: GalleryPolicy
    ) -> Live:
        """A gallery's in-memory side, kept under its name: its snapshot if fresh, else built from SQLite."""
        db = self.db
        tag = self._tag(gallery_id)
        saved_tag: dict[str, Any] | None = tag  # the snapshot's, while the index is the snapshot
        centre = self.centres.get(model_hash)
        unseal = partial(db.at_rest.open_snapshot, gallery_id)
        index = (
            GalleryIndex.load(self.snapshot_file(gallery_id), tag, self.settings, centre, unseal)
            if self.settings.snapshots
            else None
        )
        sequences, sizes = db.load_map(db.writer, gallery_id)
        if index is not None and index.ntotal != len(sequences):
            logger.warning("index snapshot of gallery '%s' disagrees with the database: rebuilding", name)
            index = None
        if index is None:
            index, sequences, sizes = self._build(db.writer, gallery_id, layout.size, None, centre=centre)
            saved_tag = None
        live = Live(gallery_id, name, model_hash, layout, index, sequences, sizes, saved_tag, policy=policy)
        live.attributes = db.load_attributes(db.writer, gallery_id)
        if index.needs_rebuild(len(sequences)):
            self._rebuild(live)
        self.galleries[name] = live
        return live

    def forget(self, live: Live) -> None:
        """After the gallery's deletion committed: its in-memory side and its snapshot go."""
        del self.galleries[live.name]
        self.snapshot_file(live.id).unlink(missing_ok=True)

    def stats(self) -> list[GalleryStats]:
        """Sizes for metrics, from memory and without the galleries' locks: metrics are read on the
        service's event loop and must never wait for a search or a write. Each figure is one read that
        the GIL keeps whole (a length, an attribute, an index's size), so it is a recent value, if not
        the same instant's for all."""
        stats = []
        for live in list(self.galleries.values()):
            index = live.index  # a rebuild swaps in another: keep to one
            stats.append(
                GalleryStats(
                    name=live.name,
                    subjects=len(live.subject_sizes),
                    sequences=len(live.sequences),
                    index_kind=index.built.kind,
                    index_source=index.built.source,
                    index_bytes=index.memory_estimate(),
                )
            )
        return stats

    # ----- changes, committed

    def apply(self, live: Live, add: Added | None = None, remove: np.ndarray | None = None) -> None:
        """Bring the index and map in step with a committed change; on any index failure rebuild from SQLite.

        Called with the write lock held, so SQLite holds exactly the committed changes applied so far.
        """
        change = Change(add, remove)
        if live.pending is not None:
            live.pending.append(change)  # committed: the index being rebuilt aside must get it too
        try:
            with live.lock.write():
                change.apply(live.index, live.sequences, live.subject_sizes)
                change.update(live.attributes)
        except Exception:
            logger.exception(
                "index update of gallery '%s' failed: rebuilding it from the database", live.name
            )
            self._rebuild(live)
            return
        if live.pending is None and not self.closing and live.index.needs_rebuild(len(live.sequences)):
            self.start_rebuild(live)

    def erased(self, live: Live, rows: list[int]) -> None:
        """After an erasure committed: the index forgets the rows, and the gallery's snapshot (which holds
        their vectors) is removed."""
        self.apply(live, remove=np.array(rows, dtype=np.int64))
        self.snapshot_file(live.id).unlink(missing_ok=True)
        live.saved_tag = None

    # ----- rebuilds

    def wait_for_builds(self, timeout: float | None = None) -> bool:
        """Wait until no index is being rebuilt in the background; False if `timeout` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.db.write_lock:
                builders = list(self.builders.values())
            if not builders:
                return True
            for thread in builders:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    return False

    def start_rebuild(self, live: Live) -> None:
        """Rebuild `live`'s index in a background thread (write lock held: starts its change log)."""
        live.pending = []
        thread = threading.Thread(
            target=self._rebuild_aside, args=(live,), name=f"rebuild-{live.name}", daemon=True
        )
        self.builders[live.id] = thread
        thread.start()

    def _rebuild(self, live: Live) -> None:
        """Rebuild index and map from SQLite (write lock held), then swap them in; searches go on."""
        db = self.db
        index, sequences, sizes = self._build(
            db.writer,
            live.id,
            live.layout.size,
            live.index.built.kind,
            centre=self.centres.get(live.model_hash),
        )
        table = db.load_attributes(db.writer, live.id)
        with live.lock.write():
            live.index, live.sequences, live.subject_sizes = index, sequences, sizes
            live.attributes = table
        if self.settings.snapshots and index.built.kind == "approximate":
            self.save_snapshot(live)  # training is the slow part of a start: keep its result

    def _rebuild_aside(self, live: Live) -> None:
        """Build a new index from a snapshot without the write lock; replay what changed; swap it in."""
        db = self.db
        conn = db.connect()
        try:
            with db.writing():  # no commit lands between the snapshot and the start of the change log
                if self.galleries.get(live.name) is not live:
                    return
                conn.execute("BEGIN")
                conn.execute("SELECT count(*) FROM sequences WHERE gallery_id = ?", (live.id,)).fetchone()
                live.pending = []  # WAL: the snapshot is taken at the transaction's first read
                kind = live.index.built.kind
            try:
                index, sequences, sizes = self._build(
                    conn,
                    live.id,
                    live.layout.size,
                    kind,
                    lambda: self._abandon(live),
                    self.centres.get(live.model_hash),
                )
            finally:
                conn.execute("COMMIT")
            with db.writing():
                if db.erased_in_wal:  # this rebuild's read held the WAL
                    db.checkpoint()
                self._abandon(live)
                for change in live.pending:
                    change.apply(index, sequences, sizes)
                with live.lock.write():
                    live.index, live.sequences, live.subject_sizes = index, sequences, sizes
                live.pending = None
                logger.info(
                    "gallery '%s': %s index rebuilt aside and swapped in", live.name, index.built.kind
                )
                if self.settings.snapshots and index.built.kind == "approximate":
                    self.save_snapshot(live)
                if index.needs_rebuild(len(sequences)):  # it grew past the new training meanwhile
                    self.start_rebuild(live)
        except (_Abandoned, StoreClosedError):
            logger.info("gallery '%s': index rebuild abandoned (store closing or gallery deleted)", live.name)
        except Exception:
            logger.exception("gallery '%s': index rebuild failed; the current index stays in use", live.name)
        finally:
            conn.close()
            with db.write_lock:
                if live.pending is not None and self.builders.get(live.id) is threading.current_thread():
                    live.pending = None
                if self.builders.get(live.id) is threading.current_thread():
                    del self.builders[live.id]

    def _abandon(self, live: Live) -> None:
        if self.closing or self.db.closed or self.galleries.get(live.name) is not live:
            raise _Abandoned

    def _build(
        self,
        conn: sqlite3.Connection,
        gallery_id: int,
        size: int,
        current: Kind | None,
        check: Callable[[], None] = lambda: None,
        centre: np.ndarray | None = None,
    ) -> tuple[GalleryIndex, SequenceMap, Counter[str]]:
        """A new index and map of the gallery as `conn` sees it; `check` runs per chunk and may raise."""
        db = self.db
        sequences, sizes = db.load_map(conn, gallery_id)
        opened = partial(db.at_rest.open_embedding, gallery_id)
        index = GalleryIndex.build(
            size,
            len(sequences),
            self.settings,
            lambda n: db.sample(conn, gallery_id, size, n, opened, check),
            db.chunks(conn, gallery_id, size, opened, check),
            current,
            centre,
        )
        return index, sequences, sizes

    # ----- snapshots

    def snapshot_file(self, gallery_id: int) -> Path:
        return self.snapshots / f"gallery-{gallery_id}.faiss"

    def save_snapshot(self, live: Live) -> None:
        """Write the index snapshot if it is stale; a disk that refuses it is logged (a cache: the next
        start rebuilds the index from SQLite)."""
        tag = self._tag(live.id)
        if tag == live.saved_tag:
            return
        try:
            with live.lock.read():
                live.index.save(
                    self.snapshot_file(live.id), tag, partial(self.db.at_rest.seal_snapshot, live.id)
                )
        except OSError as exc:
            logger.warning("gallery '%s': index snapshot not written (%s)", live.name, exc)
            return
        live.saved_tag = tag

    def _tag(self, gallery_id: int) -> dict[str, Any]:
        """What a snapshot must match: the gallery's change counter, size and last row, and index settings."""
        model_hash, state = self.db.state(gallery_id)
        return state | {"index": self.settings.fingerprint(), **_centre_tag(self.centres.get(model_hash))}


def _centre_tag(centre: np.ndarray | None) -> dict[str, str]:
    """The snapshot tag's record of the centre its vectors were indexed with (nothing when uncentred)."""
    if centre is None:
        return {}
    return {"centre": hashlib.sha256(np.ascontiguousarray(centre, "<f4").tobytes()).hexdigest()}

"""GalleryStore: enrolled subjects in SQLite (the truth) with a FAISS index per gallery (a cache).

Concurrency contract (the service calls this from a thread pool):
- writes (create/delete gallery, enrol, delete) are serialised by one store lock: commit to SQLite first,
  then update the index under the gallery's write lock, so the index applies changes in commit order;
- retraining (the switch to the approximate index, then each time the gallery doubles) runs in a
  background thread per gallery, off the store lock: it builds a new index aside from a consistent
  SQLite snapshot while writes go on, then replays the changes committed meanwhile and swaps it in
  under the store lock (milliseconds); searches use the old index until then;
- searches take the gallery's read lock, so they run together and never see an index mid-change: a
  search that starts after an enrolment returned finds it; one that starts after a delete returned does not;
- listings read SQLite through one connection per thread (WAL: they never block on the writer).
One process owns a store (an exclusive lock file): several processes would each hold a stale index.

An erasure (deleting a subject, a sequence or a gallery, or the retention sweep) leaves none of the
erased embeddings or pictures in the data folder: SQLite overwrites freed space (secure_delete), the WAL
is checkpointed and truncated, and the gallery's index snapshot, which holds the vectors, is removed
(the next close writes a fresh one). Each erasure is logged in the same transaction (`erasures`), so
exports made before it can be brought in step (docs/privacy.md).

A write that finds no room (the disk is full, or the database at its `max_bytes`) is rolled back whole
and raised as StoreFullError; until a write succeeds again, `check` (readiness) makes a small trial write
and reports the store full while that fails. Index snapshots are a cache: failing to write one is logged.

With a master key (`encryption_key`) embeddings, pictures and index snapshots are written encrypted
(gallery/crypto.py): `_at_rest` seals each value where it is written and opens it where it is read.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from gaitlu.embedding import EmbeddingLayout
from gaitlu.schemas import ErasureAction
from gallery import validate
from gallery.attributes import AttributeTable
from gallery.core import Enrolment, GalleryCore, NewGallery, Query, check_page, utc
from gallery.crypto import AtRest, Keyring, open_at_rest
from gallery.errors import (
    EncryptionKeyError,
    GalleryExistsError,
    GalleryNotFoundError,
    InvalidInputError,
    ModelMismatchError,
    SequenceNotFoundError,
    StoreClosedError,
    StoreFullError,
    StoreLockedError,
    SubjectNotFoundError,
)
from gallery.filters import SequenceAttributes, attributes
from gallery.index import GalleryIndex, Kind
from gallery.previews import GEI_KEY, split_gei
from gallery.protocol import EXPORT_CHUNK, SequenceRecord
from gallery.records import (
    Erasure,
    GalleryInfo,
    GalleryPolicy,
    GalleryStats,
    SequenceInfo,
    SubjectInfo,
    SubjectPage,
)
from gallery.rwlock import ReadWriteLock
from gallery.schema import BUSY_TIMEOUT_MS, Synchronous, connect, migrate
from gallery.search import SearchHit, search_subjects
from gallery.settings import IndexSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
CHUNK_ROWS = 1024  # rows per read when (re)building an index
TRIAL_WRITE_BYTES = 64 * 1024  # what `check` writes (and deletes) while the store is full
DAY_S = 86_400.0
SWEEP_BATCH = 10_000  # sequences per retention transaction (and per `expire` erasure and audit record)


@dataclass
class _Live:
    """A gallery's in-memory side: its index and the id -> (subject, sequence) map, both under `lock`."""

    id: int
    name: str
    model_hash: str
    layout: EmbeddingLayout
    index: GalleryIndex
    sequences: dict[int, tuple[str, str]]  # index id -> (subject_id, sequence_id)
    subject_sizes: Counter[str]
    saved_tag: dict[str, Any] | None = None  # the tag of the last snapshot written or read
    lock: ReadWriteLock = field(default_factory=ReadWriteLock)
    # While an index is rebuilt aside: the changes committed since its snapshot, to replay onto it.
    pending: list[_Change] | None = None
    # What filters select on (gallery.attributes), kept in step with SQLite by `_apply` like the map.
    attributes: AttributeTable = field(default_factory=AttributeTable)
    policy: GalleryPolicy = field(default_factory=GalleryPolicy)  # as in SQLite; set under the store lock


@dataclass(frozen=True)
class _Change:
    """One committed change to a gallery's index and map: rows added (with their vectors), rows removed."""

    add: tuple[np.ndarray, np.ndarray, str, list[SequenceInfo]] | None = None
    remove: np.ndarray | None = None

    def apply(self, index: GalleryIndex, sequences: dict[int, tuple[str, str]], sizes: Counter[str]) -> None:
        if self.add is not None:
            ids, vectors, subject_id, infos = self.add
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


class _Abandoned(Exception):
    """A rebuild in the background stops: the store is closing or the gallery was deleted."""


def _json(text: str | None) -> dict[str, Any] | None:
    return None if text is None else json.loads(text)


class GalleryStore(GalleryCore[_Live]):
    """Galleries of enrolled subjects for one model each, searchable by embedding. Thread-safe."""

    def __init__(
        self,
        path: str | Path,
        *,
        index_settings: IndexSettings | None = None,
        synchronous: Synchronous = "FULL",
        centres: Mapping[str, np.ndarray] | None = None,
        max_bytes: int | None = None,
        encryption_key: bytes | None = None,
    ) -> None:
        """`centres`: model hash -> the (parts, channels) centre of that model's calibrated centring
        (gaitlu.embedding.centre_parts): its galleries index and search centred vectors. SQLite keeps
        the vectors as enrolled, so a new centre only rebuilds the index (a cache). `max_bytes`: how
        large the database file may grow (SQLite's max_page_count; None: as the disk allows); a write
        beyond it fails as on a full disk (StoreFullError). `encryption_key`: the master key of an
        encrypted store (gallery/crypto.py); EncryptionKeyError when it is missing, wrong or not wanted."""
        self.path = Path(path)
        self.settings = index_settings or IndexSettings()
        self._centres = {
            validate.model_hash(h): np.asarray(c, np.float32) for h, c in (centres or {}).items()
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.path.with_name(self.path.name + ".lock"), "a+")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_file.close()
            raise StoreLockedError(f"gallery database {self.path} is open in another process") from exc
        self._snapshots = self.path.with_name(self.path.name + ".indexes")
        self._snapshots.mkdir(exist_ok=True)
        self._synchronous = synchronous
        self._writer = connect(self.path, synchronous)
        migrate(self._writer)
        if max_bytes is not None:
            page_size = self._writer.execute("PRAGMA page_size").fetchone()[0]
            self._writer.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page_size)}")
        self._full: str | None = None  # why the last write found no room, until one succeeds
        self._erased_in_wal = False  # an erasure's checkpoint found readers: retried after each write
        try:
            self._at_rest: AtRest = self._transaction(
                lambda: open_at_rest(self._writer, self.path, encryption_key)
            )
        except BaseException:
            self._writer.close()
            self._lock_file.close()
            raise
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = self._closing = False
        self._live: dict[str, _Live] = {}
        self._builders: dict[int, threading.Thread] = {}  # gallery id -> its rebuild in the background
        rows = self._writer.execute(
            "SELECT id, name, model_hash, dim, parts, retention_days, store_pictures FROM galleries"
        ).fetchall()
        for gallery_id, name, model_hash, size, parts, days, pictures in rows:
            layout = EmbeddingLayout.from_size(size, parts)
            policy = GalleryPolicy(days, bool(pictures))
            self._live[name] = self._open_gallery(gallery_id, name, model_hash, layout, policy)

    # ----- lifecycle

    def close(self) -> None:
        """Write fresh index snapshots and release the database. Idempotent.

        A rebuild running in the background is abandoned (the old index's snapshot is written instead).
        """
        self._closing = True
        self.wait_for_index_builds()
        with self._write_lock:
            if self._closed:
                return
            if self.settings.snapshots:
                for live in self._live.values():
                    self._save_snapshot(live)
            self._closed = True
            with self._readers_lock:
                for conn in self._readers:
                    conn.close()
                self._readers.clear()
            self._writer.close()
            self._lock_file.close()  # releases the flock

    def wait_for_index_builds(self, timeout: float | None = None) -> bool:
        """Wait until no index is being rebuilt in the background; False if `timeout` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._write_lock:
                builders = list(self._builders.values())
            if not builders:
                return True
            for thread in builders:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    return False

    # ----- galleries

    def _create(self, new: NewGallery) -> None:
        name, model_hash, layout, policy = new.name, new.model_hash, new.layout, new.policy
        with self._writing():

            def insert() -> int:
                cursor = self._writer.execute(
                    "INSERT INTO galleries (name, model_hash, dim, parts, created, settings, "
                    "retention_days, store_pictures) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        model_hash,
                        layout.size,
                        layout.parts,
                        time.time(),
                        new.metadata_json,
                        policy.retention_days,
                        policy.store_pictures,
                    ),
                )
                self._at_rest.add_gallery(self._writer, _inserted_id(cursor))
                return _inserted_id(cursor)

            try:
                gallery_id = self._transaction(insert)
            except sqlite3.IntegrityError as exc:
                raise GalleryExistsError(f"gallery '{name}' already exists") from exc
            self._live[name] = self._open_gallery(gallery_id, name, model_hash, layout, policy)

    def set_policy(self, name: str, policy: GalleryPolicy) -> GalleryInfo:
        """Change what a gallery keeps. Turning pictures off also erases the pictures it holds; a shorter
        retention takes effect at the next sweep."""
        with self._writing():
            live = self._gallery(name)

            def update() -> None:
                self._writer.execute(
                    "UPDATE galleries SET retention_days = ?, store_pictures = ? WHERE id = ?",
                    (policy.retention_days, policy.store_pictures, live.id),
                )
                if not policy.store_pictures:
                    self._writer.execute(_DROP_PICTURES, (live.id,))

            self._transaction(update)
            live.policy = policy
            if not policy.store_pictures:
                self._checkpoint()
        return self.get_gallery(name)

    def get_gallery(self, name: str) -> GalleryInfo:
        with self._reading() as conn:
            row = conn.execute(_GALLERY_INFO + " WHERE g.name = ?", (name,)).fetchone()
        if row is None:
            raise GalleryNotFoundError(f"no gallery named '{name}'")
        return _gallery_info(row)

    def list_galleries(self) -> list[GalleryInfo]:
        with self._reading() as conn:
            rows = conn.execute(_GALLERY_INFO + " ORDER BY g.name").fetchall()
        return [_gallery_info(row) for row in rows]

    def delete_gallery(self, name: str) -> None:
        """Erase a gallery and everything it holds (logged as one erasure without ids: all of it)."""
        with self._writing():
            live = self._gallery(name)

            def delete() -> None:
                self._writer.execute("DELETE FROM galleries WHERE id = ?", (live.id,))
                self._log_erasure(Erasure(name, "delete_gallery", utc(time.time())))

            self._transaction(delete)
            del self._live[name]
            self._snapshot_file(live.id).unlink(missing_ok=True)
            self._checkpoint()

    # ----- enrolment and removal

    def _enroll(self, checked: _Live, enrolment: Enrolment) -> list[SequenceInfo]:
        """In one transaction (all or none)."""
        vectors, subject_id, metadata = enrolment.vectors, enrolment.subject_id, enrolment.metadata
        with self._writing():
            live = self._gallery(checked.name)  # it may have been deleted (or re-created) while we validated
            if live.model_hash != checked.model_hash:
                raise ModelMismatchError(live.name, live.model_hash, checked.model_hash)
            metadata_json = enrolment.metadata_json
            if not live.policy.store_pictures:
                metadata_json = [validate.metadata(split_gei(m)[0]) for m in metadata]
            infos, new_rows = self._transaction(
                lambda: self._insert_sequences(live, subject_id, vectors, metadata_json, enrolment.uids)
            )
            if new_rows:
                ids = np.array([row for row, _ in new_rows], dtype=np.int64)
                self._apply(
                    live,
                    add=(ids, vectors[[i for _, i in new_rows]], subject_id, [infos[i] for _, i in new_rows]),
                )
        return infos

    def delete_subject(self, name: str, subject_id: str) -> None:
        """Remove a subject and all its sequences."""
        with self._writing():
            live = self._gallery(name)

            def delete() -> list[int]:
                found = self._writer.execute(
                    "SELECT 1 FROM subjects WHERE gallery_id = ? AND subject_id = ?", (live.id, subject_id)
                ).fetchone()
                if found is None:
                    raise SubjectNotFoundError(f"gallery '{name}' has no subject '{subject_id}'")
                rows = self._writer.execute(
                    "SELECT id, uid FROM sequences WHERE gallery_id = ? AND subject_id = ? ORDER BY id",
                    (live.id, subject_id),
                ).fetchall()
                self._writer.execute(
                    "DELETE FROM subjects WHERE gallery_id = ? AND subject_id = ?", (live.id, subject_id)
                )
                self._log_erased(live, "delete_subject", rows, subject_id)
                return [row[0] for row in rows]

            self._erased(live, self._transaction(delete))

    def delete_sequence(self, name: str, sequence_id: str) -> None:
        """Remove one sequence; a subject left with no sequences is removed too."""
        with self._writing():
            live = self._gallery(name)

            def delete() -> list[int]:
                row = self._writer.execute(
                    "SELECT id, subject_id FROM sequences WHERE gallery_id = ? AND uid = ?",
                    (live.id, sequence_id),
                ).fetchone()
                if row is None:
                    raise SequenceNotFoundError(f"gallery '{name}' has no sequence '{sequence_id}'")
                self._writer.execute("DELETE FROM sequences WHERE id = ?", (row[0],))
                self._writer.execute(
                    "DELETE FROM subjects WHERE gallery_id = ? AND subject_id = ? AND NOT EXISTS "
                    "(SELECT 1 FROM sequences WHERE gallery_id = ? AND subject_id = ?)",
                    (live.id, row[1], live.id, row[1]),
                )
                self._log_erased(live, "delete_sequence", [(row[0], sequence_id)], row[1])
                return [int(row[0])]

            self._erased(live, self._transaction(delete))

    def sweep_expired(self, now: datetime) -> list[Erasure]:
        """Erase the sequences that are older than their gallery's `retention_days` at `now` (a subject
        left without sequences goes too), SWEEP_BATCH at a time: one transaction and one `expire`
        erasure each, with the store lock released between them so that writes go on meanwhile. The
        service calls this periodically; `now` is a parameter so that the sweep can be tested at any time."""
        erasures = []
        for name in list(self._live):
            while (erased := self._expire_batch(name, now)) is not None:
                erasures.append(erased)
        return erasures

    def _expire_batch(self, name: str, now: datetime) -> Erasure | None:
        """Erase up to SWEEP_BATCH of the gallery's expired sequences, oldest rows first; None if none."""
        with self._writing():
            live = self._live.get(name)
            if live is None or live.policy.retention_days is None:
                return None
            cutoff = now.timestamp() - live.policy.retention_days * DAY_S

            def expire() -> tuple[list[int], Erasure | None]:
                rows = self._writer.execute(
                    "SELECT id, uid FROM sequences WHERE gallery_id = ? AND created < ? ORDER BY id LIMIT ?",
                    (live.id, cutoff, SWEEP_BATCH),
                ).fetchall()
                if not rows:
                    return [], None
                self._writer.executemany("DELETE FROM sequences WHERE id = ?", [(row[0],) for row in rows])
                self._writer.execute(_PRUNE_SUBJECTS, (live.id,))
                return [row[0] for row in rows], self._log_erased(live, "expire", rows, None, now)

            removed, erasure = self._transaction(expire)
            if removed:
                self._erased(live, removed)
            return erasure

    def erasures(self, gallery: str | None = None, since: datetime | None = None) -> list[Erasure]:
        """The erasure log, oldest first: of one gallery (also one deleted since), from `since` on."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT gallery, action, time, subject_id, sequence_ids FROM erasures "
                "WHERE (? IS NULL OR gallery = ?) AND time >= ? ORDER BY id",
                (gallery, gallery, since.timestamp() if since is not None else 0.0),
            ).fetchall()
        return [
            Erasure(name, action, utc(at), subject_id, tuple(json.loads(ids)))
            for name, action, at, subject_id, ids in rows
        ]

    # ----- listing

    def list_subjects(self, name: str, offset: int = 0, limit: int = 100) -> SubjectPage:
        check_page(offset, limit)
        with self._reading() as conn:
            gallery_id = self._gallery_id(conn, name)
            count = conn.execute(
                "SELECT count(*) FROM subjects WHERE gallery_id = ?", (gallery_id,)
            ).fetchone()[0]
            rows = conn.execute(
                "SELECT s.subject_id, count(q.id), s.created FROM subjects s "
                "LEFT JOIN sequences q ON q.gallery_id = s.gallery_id AND q.subject_id = s.subject_id "
                "WHERE s.gallery_id = ? GROUP BY s.subject_id ORDER BY s.subject_id LIMIT ? OFFSET ?",
                (gallery_id, limit, offset),
            ).fetchall()
        data = [SubjectInfo(subject, sequences, utc(created)) for subject, sequences, created in rows]
        return SubjectPage(data=data, count=count, offset=offset, limit=limit)

    def list_sequences(self, name: str, subject_id: str) -> list[SequenceInfo]:
        with self._reading() as conn:
            gallery_id = self._gallery_id(conn, name)
            rows = conn.execute(
                _SEQUENCE_INFO + " WHERE gallery_id = ? AND subject_id = ? ORDER BY id",
                (gallery_id, subject_id),
            ).fetchall()
        if not rows:
            raise SubjectNotFoundError(f"gallery '{name}' has no subject '{subject_id}'")
        return [self._sequence_info(name, gallery_id, row) for row in rows]

    def get_sequence(self, name: str, sequence_id: str) -> SequenceInfo:
        with self._reading() as conn:
            gallery_id = self._gallery_id(conn, name)
            row = conn.execute(
                _SEQUENCE_INFO + " WHERE gallery_id = ? AND uid = ?", (gallery_id, sequence_id)
            ).fetchone()
        if row is None:
            raise SequenceNotFoundError(f"gallery '{name}' has no sequence '{sequence_id}'")
        return self._sequence_info(name, gallery_id, row)

    def iter_records(self, name: str, chunk: int = EXPORT_CHUNK) -> Iterator[list[SequenceRecord]]:
        """Every sequence with its embedding in row order, `chunk` rows at a time, from one read
        transaction on a connection of its own (a consistent view; writers go on meanwhile)."""
        conn = connect(self.path, self._synchronous)
        try:
            conn.execute("BEGIN")
            gallery_id = self._gallery_id(conn, name)
            rows = conn.execute(
                "SELECT uid, subject_id, model_hash, metadata, created, embedding FROM sequences "
                "WHERE gallery_id = ? ORDER BY id",
                (gallery_id,),
            )
            opened = partial(self._at_rest.open_embedding, gallery_id)
            while batch := rows.fetchmany(chunk):
                yield [
                    SequenceRecord(
                        self._sequence_info(name, gallery_id, row[:5]),
                        np.frombuffer(opened(row[0], row[5]), dtype="<f4"),
                    )
                    for row in batch
                ]
        finally:
            conn.close()

    # ----- search

    def _search(self, live: _Live, query: Query) -> list[list[SearchHit]]:
        """Under the gallery's read lock. A filter becomes the index ids it matches: the index searches
        only those (gallery.index `_search_among`) and the aggregation counts only them, so its "enough
        neighbours" loop stops exactly when the matching sequences are exhausted."""
        with live.lock.read():
            index = live.index
            sizes: Mapping[str, int] = live.subject_sizes
            if query.filter is None or query.filter.is_empty:
                search, ntotal = index.search, index.ntotal
            else:
                ids, sizes = live.attributes.select(query.filter)
                search, ntotal = partial(index.search, ids=ids), len(ids)
            found = search_subjects(
                search,
                query.vectors,
                ntotal,
                live.layout.parts,
                live.sequences,
                sizes,
                query.k,
                query.top_m,
                query.threshold,
            )
            return [_with_attributes(live, hits) for hits in found]

    def get_embedding(self, name: str, sequence_id: str) -> np.ndarray:
        """A stored sequence's embedding (D,) float32, per-part normalised, as enrolled."""
        with self._reading() as conn:
            gallery_id = self._gallery_id(conn, name)
            row = conn.execute(
                "SELECT embedding FROM sequences WHERE gallery_id = ? AND uid = ?", (gallery_id, sequence_id)
            ).fetchone()
        if row is None:
            raise SequenceNotFoundError(f"gallery '{name}' has no sequence '{sequence_id}'")
        return np.frombuffer(
            self._at_rest.open_embedding(gallery_id, sequence_id, row[0]), dtype="<f4"
        ).astype(np.float32)

    def subject_embeddings(self, name: str, subject_id: str) -> tuple[list[str], np.ndarray]:
        """A subject's sequence ids and their embeddings (n, D), in enrolment order."""
        with self._reading() as conn:
            gallery_id = self._gallery_id(conn, name)
            rows = conn.execute(
                "SELECT uid, embedding FROM sequences WHERE gallery_id = ? AND subject_id = ? ORDER BY id",
                (gallery_id, subject_id),
            ).fetchall()
        if not rows:
            raise SubjectNotFoundError(f"gallery '{name}' has no subject '{subject_id}'")
        blobs = (self._at_rest.open_embedding(gallery_id, uid, blob) for uid, blob in rows)
        vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(rows), -1)
        return [row[0] for row in rows], vectors.astype(np.float32)

    def centre(self, model_hash: str) -> np.ndarray | None:
        """The (parts, channels) centre this store's galleries of `model_hash` are scored with, if any."""
        return self._centres.get(validate.model_hash(model_hash))

    def stats(self) -> list[GalleryStats]:
        """Sizes for metrics, from memory and without the galleries' locks: metrics are read on the
        service's event loop and must never wait for a search or a write. Each figure is one read that
        the GIL keeps whole (a length, an attribute, an index's size), so it is a recent value, if not
        the same instant's for all."""
        stats = []
        for live in list(self._live.values()):
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

    def check(self) -> None:
        """The local store answers while it is open, and takes writes: after a write found no room
        (StoreFullError), a trial write of TRIAL_WRITE_BYTES must commit (it is deleted at once); until
        one does, StoreFullError again."""
        if self._closed:
            raise StoreClosedError("the gallery store is closed")
        if self._full is None:
            return
        with self._writing():
            if self._full is None:  # a write succeeded meanwhile
                return
            self._transaction(
                lambda: self._writer.execute(
                    "INSERT INTO write_probe (data) VALUES (zeroblob(?))", (TRIAL_WRITE_BYTES,)
                )
            )
            self._transaction(lambda: self._writer.execute("DELETE FROM write_probe"))
            logger.info("the gallery store takes writes again")

    def rotate_key(self, new_key: bytes, new_data_keys: bool = False) -> None:
        """Re-wrap the galleries' data keys under the master key `new_key` (with `new_data_keys`, also
        re-encrypt every embedding and picture under fresh data keys) in one transaction: a crash leaves
        the store whole under the old key or the new one. Snapshots sealed under replaced data keys are
        stale by their tag: rebuilt at the next start, rewritten at close."""
        with self._writing():
            keyring = self._at_rest
            if not isinstance(keyring, Keyring):
                raise EncryptionKeyError(
                    f"the gallery database {self.path} is not encrypted: no key to rotate"
                )
            self._at_rest = self._transaction(lambda: keyring.rotate(self._writer, new_key, new_data_keys))
            self._checkpoint()  # the WAL's frames of the replaced keys go (secure_delete zeroed the pages)

    # ----- internals: access

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._write_lock:
            if self._closed:
                raise StoreClosedError("the gallery store is closed")
            yield

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """This thread's read connection inside one read transaction: one consistent view."""
        if self._closed:
            raise StoreClosedError("the gallery store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, self._synchronous)
            with self._readers_lock:
                if self._closed:
                    conn.close()
                    raise StoreClosedError("the gallery store is closed")
                self._readers.append(conn)
            self._local.conn = conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _gallery(self, name: str) -> _Live:
        if self._closed:
            raise StoreClosedError("the gallery store is closed")
        live = self._live.get(name)
        if live is None:
            raise GalleryNotFoundError(f"no gallery named '{name}'")
        return live

    def _sequence_info(self, gallery: str, gallery_id: int, row: Sequence[Any]) -> SequenceInfo:
        """A `_SEQUENCE_INFO` row as the caller's record (its picture opened)."""
        uid, subject_id, model_hash, metadata, created = row
        metadata = self._at_rest.open_metadata(gallery_id, uid, metadata)
        return SequenceInfo(uid, gallery, subject_id, model_hash, _json(metadata), utc(created))

    @staticmethod
    def _gallery_id(conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT id FROM galleries WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise GalleryNotFoundError(f"no gallery named '{name}'")
        return int(row[0])

    def _transaction(self, body: Callable[[], T]) -> T:
        """Run body() in one write transaction on the writer connection: commit, or roll back and re-raise.
        No room to write it (a full disk, or `max_bytes`) is StoreFullError, remembered until a commit."""
        try:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                result = body()
                self._writer.execute("COMMIT")
            except BaseException:
                if self._writer.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                    self._writer.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            cause = _lack_of_space(exc)
            if cause is None:
                raise
            if self._full is None:
                logger.error("gallery store: a write found no room (%s); it was rolled back", cause)
            self._full = cause
            raise StoreFullError(cause) from exc
        self._full = None
        if self._erased_in_wal:
            self._checkpoint()
        return result

    def _log_erased(
        self,
        live: _Live,
        action: ErasureAction,
        rows: Sequence[tuple[int, str]],
        subject_id: str | None,
        now: datetime | None = None,
    ) -> Erasure:
        """Log the erasure of `rows` (row id, sequence id), inside the erasing transaction."""
        erasure = Erasure(
            live.name, action, now or utc(time.time()), subject_id, tuple(uid for _, uid in rows)
        )
        self._log_erasure(erasure)
        return erasure

    def _log_erasure(self, erasure: Erasure) -> None:
        self._writer.execute(
            "INSERT INTO erasures (time, gallery, action, subject_id, sequence_ids) VALUES (?, ?, ?, ?, ?)",
            (
                erasure.time.timestamp(),
                erasure.gallery,
                erasure.action,
                erasure.subject_id,
                json.dumps(list(erasure.sequence_ids)),
            ),
        )

    def _erased(self, live: _Live, rows: list[int]) -> None:
        """After an erasure committed (write lock held): the index forgets the rows, the gallery's
        snapshot (which holds their vectors) is removed, and the WAL (whose frames hold them) is
        checkpointed into the database, where secure_delete zeroed them, and truncated."""
        self._apply(live, remove=np.array(rows, dtype=np.int64))
        self._snapshot_file(live.id).unlink(missing_ok=True)
        live.saved_tag = None
        self._checkpoint()

    def _checkpoint(self) -> None:
        """Checkpoint the WAL into the database and truncate it, without waiting for readers (write lock
        held): while a long read (an index rebuild, an export) holds an older snapshot the WAL cannot
        be truncated, and the erased rows stay in its frames until the checkpoint that the next write,
        or the rebuild's end, tries again (`_erased_in_wal`)."""
        self._writer.execute("PRAGMA busy_timeout=0")
        try:
            busy, _, _ = self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            self._writer.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if busy and not self._erased_in_wal:
            logger.info("gallery store: a long read holds the WAL; erased rows leave it later")
        self._erased_in_wal = bool(busy)

    def _insert_sequences(
        self,
        live: _Live,
        subject_id: str,
        vectors: np.ndarray,
        metadata_json: list[str | None],
        uids: list[str] | None,
    ) -> tuple[list[SequenceInfo], list[tuple[int, int]]]:
        """Insert rows (in a transaction): all sequences' info, (row id, input index) of new ones."""
        now = time.time()
        conn = self._writer
        conn.execute(
            "INSERT OR IGNORE INTO subjects (gallery_id, subject_id, created) VALUES (?, ?, ?)",
            (live.id, subject_id, now),
        )
        infos, new_rows = [], []
        for i, vector in enumerate(vectors):
            blob = vector.astype("<f4").tobytes()
            if uids is not None:
                existing = conn.execute(
                    "SELECT subject_id, embedding FROM sequences WHERE gallery_id = ? AND uid = ?",
                    (live.id, uids[i]),
                ).fetchone()
                if existing is not None:
                    stored = self._at_rest.open_embedding(live.id, uids[i], existing[1])
                    validate.retry(live.name, uids[i], subject_id, blob, (existing[0], stored))
                    row = conn.execute(
                        _SEQUENCE_INFO + " WHERE gallery_id = ? AND uid = ?", (live.id, uids[i])
                    )
                    infos.append(self._sequence_info(live.name, live.id, row.fetchone()))
                    continue
            uid = uids[i] if uids is not None else uuid.uuid4().hex
            cursor = conn.execute(
                "INSERT INTO sequences (gallery_id, uid, subject_id, model_hash, metadata, embedding, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    live.id,
                    uid,
                    subject_id,
                    live.model_hash,
                    self._at_rest.seal_metadata(live.id, uid, metadata_json[i]),
                    self._at_rest.seal_embedding(live.id, uid, blob),
                    now,
                ),
            )
            new_rows.append((_inserted_id(cursor), i))
            infos.append(
                SequenceInfo(uid, live.name, subject_id, live.model_hash, _json(metadata_json[i]), utc(now))
            )
        return infos, new_rows

    # ----- internals: the index, kept in step with SQLite

    def _apply(
        self,
        live: _Live,
        add: tuple[np.ndarray, np.ndarray, str, list[SequenceInfo]] | None = None,
        remove: np.ndarray | None = None,
    ) -> None:
        """Bring the index and map in step with a committed change; on any index failure rebuild from SQLite.

        Called with the store write lock held, so SQLite holds exactly the committed changes applied so far.
        """
        change = _Change(add, remove)
        if live.pending is not None:
            live.pending.append(change)  # committed: the index being rebuilt aside must get it too
        try:
            with live.lock.write():
                change.apply(live.index, live.sequences, live.subject_sizes)
                _update_attributes(live.attributes, change)
        except Exception:
            logger.exception(
                "index update of gallery '%s' failed: rebuilding it from the database", live.name
            )
            self._rebuild(live)
            return
        if live.pending is None and not self._closing and live.index.needs_rebuild(len(live.sequences)):
            self._start_rebuild(live)

    def _rebuild(self, live: _Live) -> None:
        """Rebuild index and map from SQLite (write lock held), then swap them in; searches go on."""
        index, sequences, sizes = self._build(
            self._writer, live.id, live.layout.size, live.index.built.kind, centre=self._centre(live)
        )
        table = self._load_attributes(self._writer, live.id)
        with live.lock.write():
            live.index, live.sequences, live.subject_sizes = index, sequences, sizes
            live.attributes = table
        if self.settings.snapshots and index.built.kind == "approximate":
            self._save_snapshot(live)  # training is the slow part of a start: keep its result

    def _start_rebuild(self, live: _Live) -> None:
        """Rebuild `live`'s index in a background thread (write lock held: starts its change log)."""
        live.pending = []
        thread = threading.Thread(
            target=self._rebuild_aside, args=(live,), name=f"rebuild-{live.name}", daemon=True
        )
        self._builders[live.id] = thread
        thread.start()

    def _rebuild_aside(self, live: _Live) -> None:
        """Build a new index from a snapshot without the store lock; replay what changed; swap it in."""
        conn = connect(self.path, self._synchronous)
        try:
            with self._writing():  # no commit lands between the snapshot and the start of the change log
                if self._live.get(live.name) is not live:
                    return
                conn.execute("BEGIN")
                conn.execute("SELECT count(*) FROM sequences WHERE gallery_id = ?", (live.id,)).fetchone()
                live.pending = []  # WAL: the snapshot is taken at the transaction's first read
                kind = live.index.built.kind
            try:
                index, sequences, sizes = self._build(
                    conn, live.id, live.layout.size, kind, lambda: self._abandon(live), self._centre(live)
                )
            finally:
                conn.execute("COMMIT")
            with self._writing():
                if self._erased_in_wal:  # this rebuild's read held the WAL
                    self._checkpoint()
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
                    self._save_snapshot(live)
                if index.needs_rebuild(len(sequences)):  # it grew past the new training meanwhile
                    self._start_rebuild(live)
        except (_Abandoned, StoreClosedError):
            logger.info("gallery '%s': index rebuild abandoned (store closing or gallery deleted)", live.name)
        except Exception:
            logger.exception("gallery '%s': index rebuild failed; the current index stays in use", live.name)
        finally:
            conn.close()
            with self._write_lock:
                if live.pending is not None and self._builders.get(live.id) is threading.current_thread():
                    live.pending = None
                if self._builders.get(live.id) is threading.current_thread():
                    del self._builders[live.id]

    def _centre(self, live: _Live) -> np.ndarray | None:
        return self._centres.get(live.model_hash)

    @staticmethod
    def _load_attributes(conn: sqlite3.Connection, gallery_id: int) -> AttributeTable:
        """The gallery's filterable attributes from SQLite (the reserved keys only, extracted by SQLite).
        A sequence enrolled before attributes were validated keeps those it has well-formed."""
        table = AttributeTable()
        rows = conn.execute(
            "SELECT id, subject_id, uid, json_extract(metadata, '$.camera', '$.site', '$.captured_at', "
            "'$.tags') FROM sequences WHERE gallery_id = ?",
            (gallery_id,),
        )
        for row_id, subject_id, uid, extracted in rows:
            table.add([row_id], subject_id, [uid], [_stored_attributes(extracted, uid)])
        return table

    def _abandon(self, live: _Live) -> None:
        if self._closing or self._closed or self._live.get(live.name) is not live:
            raise _Abandoned

    def _open_gallery(
        self, gallery_id: int, name: str, model_hash: str, layout: EmbeddingLayout, policy: GalleryPolicy
    ) -> _Live:
        """A gallery's in-memory side: its snapshot if fresh, else built from SQLite (write lock held)."""
        tag = self._tag(gallery_id)
        saved_tag: dict[str, Any] | None = tag  # the snapshot's, while the index is the snapshot
        centre = self._centres.get(model_hash)
        unseal = partial(self._at_rest.open_snapshot, gallery_id)
        index = (
            GalleryIndex.load(self._snapshot_file(gallery_id), tag, self.settings, centre, unseal)
            if self.settings.snapshots
            else None
        )
        sequences, sizes = self._load_map(self._writer, gallery_id)
        if index is not None and index.ntotal != len(sequences):
            logger.warning("index snapshot of gallery '%s' disagrees with the database: rebuilding", name)
            index = None
        if index is None:
            index, sequences, sizes = self._build(self._writer, gallery_id, layout.size, None, centre=centre)
            saved_tag = None
        live = _Live(gallery_id, name, model_hash, layout, index, sequences, sizes, saved_tag, policy=policy)
        live.attributes = self._load_attributes(self._writer, gallery_id)
        if index.needs_rebuild(len(sequences)):
            self._rebuild(live)
        return live

    def _build(
        self,
        conn: sqlite3.Connection,
        gallery_id: int,
        size: int,
        current: Kind | None,
        check: Callable[[], None] = lambda: None,
        centre: np.ndarray | None = None,
    ) -> tuple[GalleryIndex, dict[int, tuple[str, str]], Counter[str]]:
        """A new index and map of the gallery as `conn` sees it; `check` runs per chunk and may raise."""
        sequences, sizes = self._load_map(conn, gallery_id)
        opened = partial(self._at_rest.open_embedding, gallery_id)

        def sample(n: int) -> Iterator[np.ndarray]:
            rows = conn.execute(
                "SELECT uid, embedding FROM sequences WHERE id IN "
                "(SELECT id FROM sequences WHERE gallery_id = ? ORDER BY random() LIMIT ?)",
                (gallery_id, n),
            )
            while batch := rows.fetchmany(CHUNK_ROWS):
                check()
                blobs = b"".join(opened(uid, blob) for uid, blob in batch)
                yield np.frombuffer(blobs, dtype="<f4").reshape(len(batch), size)

        def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            rows = conn.execute(
                "SELECT id, uid, embedding FROM sequences WHERE gallery_id = ? ORDER BY id", (gallery_id,)
            )
            while batch := rows.fetchmany(CHUNK_ROWS):
                check()
                ids = np.array([row[0] for row in batch], dtype=np.int64)
                blobs = b"".join(opened(uid, blob) for _, uid, blob in batch)
                yield ids, np.frombuffer(blobs, dtype="<f4").reshape(len(batch), size)

        index = GalleryIndex.build(size, len(sequences), self.settings, sample, chunks(), current, centre)
        return index, sequences, sizes

    @staticmethod
    def _load_map(
        conn: sqlite3.Connection, gallery_id: int
    ) -> tuple[dict[int, tuple[str, str]], Counter[str]]:
        rows = conn.execute(
            "SELECT id, subject_id, uid FROM sequences WHERE gallery_id = ?", (gallery_id,)
        ).fetchall()
        sequences = {row: (subject, uid) for row, subject, uid in rows}
        return sequences, Counter(subject for subject, _ in sequences.values())

    def _tag(self, gallery_id: int) -> dict[str, Any]:
        """What a snapshot must match: the gallery's change counter, size and last row, and index settings."""
        version, model_hash = self._writer.execute(
            "SELECT version, model_hash FROM galleries WHERE id = ?", (gallery_id,)
        ).fetchone()
        count, max_id = self._writer.execute(
            "SELECT count(*), coalesce(max(id), 0) FROM sequences WHERE gallery_id = ?", (gallery_id,)
        ).fetchone()
        return {
            "gallery": gallery_id,
            "version": version,
            "count": count,
            "max_id": max_id,
            "index": self.settings.fingerprint(),
            **_centre_tag(self._centres.get(model_hash)),
            **self._at_rest.tag(gallery_id),
        }

    def _snapshot_file(self, gallery_id: int) -> Path:
        return self._snapshots / f"gallery-{gallery_id}.faiss"

    def _save_snapshot(self, live: _Live) -> None:
        """Write the index snapshot if it is stale; a disk that refuses it is logged (a cache: the next
        start rebuilds the index from SQLite)."""
        tag = self._tag(live.id)
        if tag == live.saved_tag:
            return
        try:
            with live.lock.read():
                live.index.save(
                    self._snapshot_file(live.id), tag, partial(self._at_rest.seal_snapshot, live.id)
                )
        except OSError as exc:
            logger.warning("gallery '%s': index snapshot not written (%s)", live.name, exc)
            return
        live.saved_tag = tag


def _update_attributes(table: AttributeTable, change: _Change) -> None:
    """Apply a committed change to a gallery's attribute table (as `_Change.apply` does to its map)."""
    if change.add is not None:
        ids, _, subject_id, infos = change.add
        found = [attributes(info.metadata) for info in infos]  # validated at enrolment
        table.add(ids.tolist(), subject_id, [info.sequence_id for info in infos], found)
    if change.remove is not None and len(change.remove):
        table.remove(change.remove.tolist())


def _stored_attributes(extracted: str | None, uid: str) -> SequenceAttributes:
    """Attributes from SQLite's json_extract of the four keys (a JSON array of their values; None for a
    sequence without metadata)."""
    if extracted is None:
        return SequenceAttributes()
    values = dict(zip(("camera", "site", "captured_at", "tags"), json.loads(extracted), strict=True))
    try:
        return attributes({key: value for key, value in values.items() if value is not None})
    except InvalidInputError as exc:
        logger.warning("sequence '%s' has malformed attributes, not filterable: %s", uid, exc)
        return SequenceAttributes()


def _with_attributes(live: _Live, hits: list[SearchHit]) -> list[SearchHit]:
    """Hits with their best sequence's attributes, from memory (read lock held)."""
    table = live.attributes
    return [replace(hit, attributes=table.get(hit.sequence_id) or SequenceAttributes()) for hit in hits]


def _centre_tag(centre: np.ndarray | None) -> dict[str, str]:
    """The snapshot tag's record of the centre its vectors were indexed with (nothing when uncentred)."""
    if centre is None:
        return {}
    return {"centre": hashlib.sha256(np.ascontiguousarray(centre, "<f4").tobytes()).hexdigest()}


_GALLERY_INFO = (
    "SELECT g.name, g.model_hash, g.dim, g.parts, g.settings, g.created, "
    "(SELECT count(*) FROM subjects s WHERE s.gallery_id = g.id), "
    "(SELECT count(*) FROM sequences q WHERE q.gallery_id = g.id), g.retention_days, g.store_pictures "
    "FROM galleries g"
)
# Subjects of a gallery left without sequences.
_PRUNE_SUBJECTS = (
    "DELETE FROM subjects WHERE gallery_id = ?1 AND NOT EXISTS "
    "(SELECT 1 FROM sequences q WHERE q.gallery_id = ?1 AND q.subject_id = subjects.subject_id)"
)
# Every GEI picture of a gallery out of its sequences' metadata (metadata that held only one reads null).
_DROP_PICTURES = (
    f"UPDATE sequences SET metadata = nullif(json_remove(metadata, '$.{GEI_KEY}'), '{{}}') "
    f"WHERE gallery_id = ? AND json_type(metadata, '$.{GEI_KEY}') IS NOT NULL"
)
_SEQUENCE_INFO = "SELECT uid, subject_id, model_hash, metadata, created FROM sequences"


def _lack_of_space(exc: BaseException) -> str | None:
    """Why a write failed, if it was for lack of space (SQLITE_FULL, ENOSPC, EDQUOT); else None."""
    if isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL:
        return str(exc)  # "database or disk is full"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return os.strerror(exc.errno)
    return None


def _inserted_id(cursor: sqlite3.Cursor) -> int:
    """The rowid of the row an INSERT just made (typed `int | None`: None only before any insert)."""
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _gallery_info(row: Sequence[Any]) -> GalleryInfo:
    name, model_hash, size, parts, settings, created, subjects, sequences, days, pictures = row
    layout = EmbeddingLayout.from_size(size, parts)
    policy = GalleryPolicy(days, bool(pictures))
    return GalleryInfo(name, model_hash, layout, _json(settings), utc(created), subjects, sequences, policy)

"""The local store's SQLite layer: the database file, its connections and transactions, and every statement.

`Database` owns the process-wide lock file (one process opens a store), the writer connection (every
write, serialised by `write_lock`), one read connection per thread (WAL: readers never block on the
writer), transactions that turn a lack of space into StoreFullError, WAL checkpoints after erasures,
and the at-rest keyring (gallery/crypto.py) that seals values where they are written and opens them
where they are read. Its statements take and return plain values and records; the index and the
locking around a write are the store's (gallery/store.py) and the live indexes' (gallery/live.py).

Methods named for a write (`insert_*`, `delete_*`, `expire`, `update_policy`) run inside a transaction
the caller opened with `transaction`, write lock held; the readers open their own read transaction.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from gaitlu.embedding import EmbeddingLayout
from gaitlu.schemas import ErasureAction
from gallery import validate
from gallery.attributes import AttributeTable
from gallery.core import NewGallery, utc
from gallery.crypto import AtRest, Keyring, open_at_rest
from gallery.errors import (
    EncryptionKeyError,
    GalleryNotFoundError,
    InvalidInputError,
    SequenceNotFoundError,
    StoreClosedError,
    StoreFullError,
    StoreLockedError,
    SubjectNotFoundError,
)
from gallery.filters import SequenceAttributes, attributes
from gallery.previews import GEI_KEY
from gallery.protocol import EXPORT_CHUNK, SequenceRecord
from gallery.records import Erasure, GalleryInfo, GalleryPolicy, SequenceInfo, SubjectInfo, SubjectPage
from gallery.schema import BUSY_TIMEOUT_MS, Synchronous, connect, migrate

logger = logging.getLogger(__name__)

T = TypeVar("T")
CHUNK_ROWS = 1024  # rows per read when (re)building an index
TRIAL_WRITE_BYTES = 64 * 1024  # what `check_room` writes (and deletes) while the store is full
SequenceMap = dict[int, tuple[str, str]]  # index id (the row id) -> (subject_id, sequence_id)
Opener = Callable[[str, bytes], bytes]  # (sequence id, stored embedding) -> float32 bytes


class Database:
    """One gallery database, open in this process only (StoreLockedError otherwise). Thread-safe."""

    def __init__(
        self, path: Path, synchronous: Synchronous, max_bytes: int | None, encryption_key: bytes | None
    ) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.path.with_name(self.path.name + ".lock"), "a+")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_file.close()
            raise StoreLockedError(f"gallery database {self.path} is open in another process") from exc
        self.synchronous = synchronous
        self.writer = connect(self.path, synchronous)
        migrate(self.writer)
        if max_bytes is not None:
            page_size = self.writer.execute("PRAGMA page_size").fetchone()[0]
            self.writer.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page_size)}")
        self.full: str | None = None  # why the last write found no room, until one succeeds
        self.erased_in_wal = False  # an erasure's checkpoint found readers: retried after each write
        try:
            self.at_rest: AtRest = self.transaction(
                lambda: open_at_rest(self.writer, self.path, encryption_key)
            )
        except BaseException:
            self.writer.close()
            self._lock_file.close()
            raise
        self.write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self.closed = False

    def close(self) -> None:
        """Close every connection and release the lock file (write lock held)."""
        self.closed = True
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self.writer.close()
        self._lock_file.close()  # releases the flock

    # ----- access

    def connect(self) -> sqlite3.Connection:
        """A connection of the caller's own (a long read: an export, an index rebuild)."""
        return connect(self.path, self.synchronous)

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self.write_lock:
            if self.closed:
                raise StoreClosedError("the gallery store is closed")
            yield

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """This thread's read connection inside one read transaction: one consistent view."""
        if self.closed:
            raise StoreClosedError("the gallery store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.connect()
            with self._readers_lock:
                if self.closed:
                    conn.close()
                    raise StoreClosedError("the gallery store is closed")
                self._readers.append(conn)
            self._local.conn = conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def transaction(self, body: Callable[[], T]) -> T:
        """Run body() in one write transaction on the writer connection: commit, or roll back and re-raise.
        No room to write it (a full disk, or `max_bytes`) is StoreFullError, remembered until a commit."""
        try:
            self.writer.execute("BEGIN IMMEDIATE")
            try:
                result = body()
                self.writer.execute("COMMIT")
            except BaseException:
                if self.writer.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                    self.writer.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            cause = _lack_of_space(exc)
            if cause is None:
                raise
            if self.full is None:
                logger.error("gallery store: a write found no room (%s); it was rolled back", cause)
            self.full = cause
            raise StoreFullError(cause) from exc
        self.full = None
        if self.erased_in_wal:
            self.checkpoint()
        return result

    def checkpoint(self) -> None:
        """Checkpoint the WAL into the database and truncate it, without waiting for readers (write lock
        held): while a long read (an index rebuild, an export) holds an older snapshot the WAL cannot
        be truncated, and the erased rows stay in its frames until the checkpoint that the next write,
        or the rebuild's end, tries again (`erased_in_wal`)."""
        self.writer.execute("PRAGMA busy_timeout=0")
        try:
            busy, _, _ = self.writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            self.writer.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if busy and not self.erased_in_wal:
            logger.info("gallery store: a long read holds the WAL; erased rows leave it later")
        self.erased_in_wal = bool(busy)

    def check_room(self) -> None:
        """While the last write found no room: a trial write of TRIAL_WRITE_BYTES must commit (it is
        deleted at once); until one does, StoreFullError again."""
        if self.full is None:
            return
        with self.writing():
            if self.full is None:  # a write succeeded meanwhile
                return
            self.transaction(
                lambda: self.writer.execute(
                    "INSERT INTO write_probe (data) VALUES (zeroblob(?))", (TRIAL_WRITE_BYTES,)
                )
            )
            self.transaction(lambda: self.writer.execute("DELETE FROM write_probe"))
            logger.info("the gallery store takes writes again")

    def rotate_key(self, new_key: bytes, new_data_keys: bool) -> None:
        """Re-wrap (or, with `new_data_keys`, replace) the data keys under `new_key`, in one transaction."""
        with self.writing():
            keyring = self.at_rest
            if not isinstance(keyring, Keyring):
                raise EncryptionKeyError(
                    f"the gallery database {self.path} is not encrypted: no key to rotate"
                )
            self.at_rest = self.transaction(lambda: keyring.rotate(self.writer, new_key, new_data_keys))
            self.checkpoint()  # the WAL's frames of the replaced keys go (secure_delete zeroed the pages)

    # ----- galleries

    def galleries(self) -> list[tuple[int, str, str, EmbeddingLayout, GalleryPolicy]]:
        """(id, name, model hash, layout, policy) of every gallery, for the store's start."""
        rows = self.writer.execute(
            "SELECT id, name, model_hash, dim, parts, retention_days, store_pictures FROM galleries"
        ).fetchall()
        return [
            (
                gallery_id,
                name,
                model_hash,
                EmbeddingLayout.from_size(size, parts),
                GalleryPolicy(days, bool(pics)),
            )
            for gallery_id, name, model_hash, size, parts, days, pics in rows
        ]

    def insert_gallery(self, new: NewGallery) -> int:
        """The new gallery's id; sqlite3.IntegrityError if the name is taken."""
        cursor = self.writer.execute(
            "INSERT INTO galleries (name, model_hash, dim, parts, created, settings, "
            "retention_days, store_pictures) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                new.name,
                new.model_hash,
                new.layout.size,
                new.layout.parts,
                time.time(),
                new.metadata_json,
                new.policy.retention_days,
                new.policy.store_pictures,
            ),
        )
        self.at_rest.add_gallery(self.writer, _inserted_id(cursor))
        return _inserted_id(cursor)

    def update_policy(self, gallery_id: int, policy: GalleryPolicy) -> None:
        """Turning pictures off also erases the pictures the gallery holds."""
        self.writer.execute(
            "UPDATE galleries SET retention_days = ?, store_pictures = ? WHERE id = ?",
            (policy.retention_days, policy.store_pictures, gallery_id),
        )
        if not policy.store_pictures:
            self.writer.execute(_DROP_PICTURES, (gallery_id,))

    def delete_gallery(self, gallery_id: int, name: str) -> None:
        self.writer.execute("DELETE FROM galleries WHERE id = ?", (gallery_id,))
        self.log_erasure(Erasure(name, "delete_gallery", utc(time.time())))

    def get_gallery(self, name: str) -> GalleryInfo:
        with self.reading() as conn:
            row = conn.execute(_GALLERY_INFO + " WHERE g.name = ?", (name,)).fetchone()
        if row is None:
            raise GalleryNotFoundError(f"no gallery named '{name}'")
        return _gallery_info(row)

    def list_galleries(self) -> list[GalleryInfo]:
        with self.reading() as conn:
            rows = conn.execute(_GALLERY_INFO + " ORDER BY g.name").fetchall()
        return [_gallery_info(row) for row in rows]

    # ----- sequences: writes

    def insert_sequences(
        self,
        gallery_id: int,
        gallery: str,
        model_hash: str,
        subject_id: str,
        vectors: np.ndarray,
        metadata_json: list[str | None],
        uids: list[str] | None,
    ) -> tuple[list[SequenceInfo], list[tuple[int, int]]]:
        """Insert rows: all sequences' info, (row id, input index) of new ones. A given id held already
        for this subject with this embedding is a retry (its stored info); with another, a conflict."""
        now = time.time()
        conn = self.writer
        conn.execute(
            "INSERT OR IGNORE INTO subjects (gallery_id, subject_id, created) VALUES (?, ?, ?)",
            (gallery_id, subject_id, now),
        )
        infos, new_rows = [], []
        for i, vector in enumerate(vectors):
            blob = vector.astype("<f4").tobytes()
            if uids is not None:
                existing = conn.execute(
                    "SELECT subject_id, embedding FROM sequences WHERE gallery_id = ? AND uid = ?",
                    (gallery_id, uids[i]),
                ).fetchone()
                if existing is not None:
                    stored = self.at_rest.open_embedding(gallery_id, uids[i], existing[1])
                    validate.retry(gallery, uids[i], subject_id, blob, (existing[0], stored))
                    row = conn.execute(
                        _SEQUENCE_INFO + " WHERE gallery_id = ? AND uid = ?", (gallery_id, uids[i])
                    )
                    infos.append(self._sequence_info(gallery, gallery_id, row.fetchone()))
                    continue
            uid = uids[i] if uids is not None else uuid.uuid4().hex
            cursor = conn.execute(
                "INSERT INTO sequences (gallery_id, uid, subject_id, model_hash, metadata, embedding, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    gallery_id,
                    uid,
                    subject_id,
                    model_hash,
                    self.at_rest.seal_metadata(gallery_id, uid, metadata_json[i]),
                    self.at_rest.seal_embedding(gallery_id, uid, blob),
                    now,
                ),
            )
            new_rows.append((_inserted_id(cursor), i))
            infos.append(
                SequenceInfo(uid, gallery, subject_id, model_hash, _json(metadata_json[i]), utc(now))
            )
        return infos, new_rows

    def delete_subject(self, gallery_id: int, gallery: str, subject_id: str) -> list[int]:
        """Delete a subject's sequences (logged); their row ids."""
        found = self.writer.execute(
            "SELECT 1 FROM subjects WHERE gallery_id = ? AND subject_id = ?", (gallery_id, subject_id)
        ).fetchone()
        if found is None:
            raise SubjectNotFoundError(f"gallery '{gallery}' has no subject '{subject_id}'")
        rows = self.writer.execute(
            "SELECT id, uid FROM sequences WHERE gallery_id = ? AND subject_id = ? ORDER BY id",
            (gallery_id, subject_id),
        ).fetchall()
        self.writer.execute(
            "DELETE FROM subjects WHERE gallery_id = ? AND subject_id = ?", (gallery_id, subject_id)
        )
        self.log_erased(gallery, "delete_subject", rows, subject_id)
        return [row[0] for row in rows]

    def delete_sequence(self, gallery_id: int, gallery: str, sequence_id: str) -> list[int]:
        """Delete one sequence (logged), and its subject if it has no other; its row id."""
        row = self.writer.execute(
            "SELECT id, subject_id FROM sequences WHERE gallery_id = ? AND uid = ?",
            (gallery_id, sequence_id),
        ).fetchone()
        if row is None:
            raise SequenceNotFoundError(f"gallery '{gallery}' has no sequence '{sequence_id}'")
        self.writer.execute("DELETE FROM sequences WHERE id = ?", (row[0],))
        self.writer.execute(
            "DELETE FROM subjects WHERE gallery_id = ? AND subject_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM sequences WHERE gallery_id = ? AND subject_id = ?)",
            (gallery_id, row[1], gallery_id, row[1]),
        )
        self.log_erased(gallery, "delete_sequence", [(row[0], sequence_id)], row[1])
        return [int(row[0])]

    def expire(
        self, gallery_id: int, gallery: str, cutoff: float, now: datetime, limit: int
    ) -> tuple[list[int], Erasure | None]:
        """Delete up to `limit` sequences created before `cutoff`, oldest rows first, and the subjects
        left without any (one `expire` erasure): their row ids and the erasure, or nothing."""
        rows = self.writer.execute(
            "SELECT id, uid FROM sequences WHERE gallery_id = ? AND created < ? ORDER BY id LIMIT ?",
            (gallery_id, cutoff, limit),
        ).fetchall()
        if not rows:
            return [], None
        self.writer.executemany("DELETE FROM sequences WHERE id = ?", [(row[0],) for row in rows])
        self.writer.execute(_PRUNE_SUBJECTS, (gallery_id,))
        return [row[0] for row in rows], self.log_erased(gallery, "expire", rows, None, now)

    def log_erased(
        self,
        gallery: str,
        action: ErasureAction,
        rows: Sequence[tuple[int, str]],
        subject_id: str | None,
        now: datetime | None = None,
    ) -> Erasure:
        """Log the erasure of `rows` (row id, sequence id), inside the erasing transaction."""
        erasure = Erasure(gallery, action, now or utc(time.time()), subject_id, tuple(uid for _, uid in rows))
        self.log_erasure(erasure)
        return erasure

    def log_erasure(self, erasure: Erasure) -> None:
        self.writer.execute(
            "INSERT INTO erasures (time, gallery, action, subject_id, sequence_ids) VALUES (?, ?, ?, ?, ?)",
            (
                erasure.time.timestamp(),
                erasure.gallery,
                erasure.action,
                erasure.subject_id,
                json.dumps(list(erasure.sequence_ids)),
            ),
        )

    # ----- reads

    def erasures(self, gallery: str | None, since: datetime | None) -> list[Erasure]:
        """The erasure log, oldest first: of one gallery (also one deleted since), from `since` on."""
        with self.reading() as conn:
            rows = conn.execute(
                "SELECT gallery, action, time, subject_id, sequence_ids FROM erasures "
                "WHERE (? IS NULL OR gallery = ?) AND time >= ? ORDER BY id",
                (gallery, gallery, since.timestamp() if since is not None else 0.0),
            ).fetchall()
        return [
            Erasure(name, action, utc(at), subject_id, tuple(json.loads(ids)))
            for name, action, at, subject_id, ids in rows
        ]

    def list_subjects(self, name: str, offset: int, limit: int) -> SubjectPage:
        with self.reading() as conn:
            gallery_id = gallery_id_of(conn, name)
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
        with self.reading() as conn:
            gallery_id = gallery_id_of(conn, name)
            rows = conn.execute(
                _SEQUENCE_INFO + " WHERE gallery_id = ? AND subject_id = ? ORDER BY id",
                (gallery_id, subject_id),
            ).fetchall()
        if not rows:
            raise SubjectNotFoundError(f"gallery '{name}' has no subject '{subject_id}'")
        return [self._sequence_info(name, gallery_id, row) for row in rows]

    def get_sequence(self, name: str, sequence_id: str) -> SequenceInfo:
        with self.reading() as conn:
            gallery_id = gallery_id_of(conn, name)
            row = conn.execute(
                _SEQUENCE_INFO + " WHERE gallery_id = ? AND uid = ?", (gallery_id, sequence_id)
            ).fetchone()
        if row is None:
            raise SequenceNotFoundError(f"gallery '{name}' has no sequence '{sequence_id}'")
        return self._sequence_info(name, gallery_id, row)

    def iter_records(self, name: str, chunk: int = EXPORT_CHUNK) -> Iterator[list[SequenceRecord]]:
        """Every sequence with its embedding in row order, `chunk` rows at a time, from one read
        transaction on a connection of its own (a consistent view; writers go on meanwhile)."""
        conn = self.connect()
        try:
            conn.execute("BEGIN")
            gallery_id = gallery_id_of(conn, name)
            rows = conn.execute(
                "SELECT uid, subject_id, model_hash, metadata, created, embedding FROM sequences "
                "WHERE gallery_id = ? ORDER BY id",
                (gallery_id,),
            )
            opened = partial(self.at_rest.open_embedding, gallery_id)
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

    def get_embedding(self, name: str, sequence_id: str) -> np.ndarray:
        with self.reading() as conn:
            gallery_id = gallery_id_of(conn, name)
            row = conn.execute(
                "SELECT embedding FROM sequences WHERE gallery_id = ? AND uid = ?", (gallery_id, sequence_id)
            ).fetchone()
        if row is None:
            raise SequenceNotFoundError(f"gallery '{name}' has no sequence '{sequence_id}'")
        return np.frombuffer(
            self.at_rest.open_embedding(gallery_id, sequence_id, row[0]), dtype="<f4"
        ).astype(np.float32)

    def subject_embeddings(self, name: str, subject_id: str) -> tuple[list[str], np.ndarray]:
        with self.reading() as conn:
            gallery_id = gallery_id_of(conn, name)
            rows = conn.execute(
                "SELECT uid, embedding FROM sequences WHERE gallery_id = ? AND subject_id = ? ORDER BY id",
                (gallery_id, subject_id),
            ).fetchall()
        if not rows:
            raise SubjectNotFoundError(f"gallery '{name}' has no subject '{subject_id}'")
        blobs = (self.at_rest.open_embedding(gallery_id, uid, blob) for uid, blob in rows)
        vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(rows), -1)
        return [row[0] for row in rows], vectors.astype(np.float32)

    # ----- what an index is built from (on `conn`: the writer, or a rebuild's own snapshot)

    @staticmethod
    def load_map(conn: sqlite3.Connection, gallery_id: int) -> tuple[SequenceMap, Counter[str]]:
        """Index id -> (subject, sequence) of every sequence, and each subject's sequence count."""
        rows = conn.execute(
            "SELECT id, subject_id, uid FROM sequences WHERE gallery_id = ?", (gallery_id,)
        ).fetchall()
        sequences = {row: (subject, uid) for row, subject, uid in rows}
        return sequences, Counter(subject for subject, _ in sequences.values())

    @staticmethod
    def load_attributes(conn: sqlite3.Connection, gallery_id: int) -> AttributeTable:
        """The gallery's filterable attributes (the reserved keys only, extracted by SQLite). A sequence
        enrolled before attributes were validated keeps those it has well-formed."""
        table = AttributeTable()
        rows = conn.execute(
            "SELECT id, subject_id, uid, json_extract(metadata, '$.camera', '$.site', '$.captured_at', "
            "'$.tags') FROM sequences WHERE gallery_id = ?",
            (gallery_id,),
        )
        for row_id, subject_id, uid, extracted in rows:
            table.add([row_id], subject_id, [uid], [_stored_attributes(extracted, uid)])
        return table

    @staticmethod
    def sample(
        conn: sqlite3.Connection,
        gallery_id: int,
        size: int,
        n: int,
        opened: Opener,
        check: Callable[[], None],
    ) -> Iterator[np.ndarray]:
        """Up to n random embeddings (m, size), CHUNK_ROWS at a time, each opened by `opened(uid, blob)`;
        `check` runs per chunk and may raise."""
        rows = conn.execute(
            "SELECT uid, embedding FROM sequences WHERE id IN "
            "(SELECT id FROM sequences WHERE gallery_id = ? ORDER BY random() LIMIT ?)",
            (gallery_id, n),
        )
        while batch := rows.fetchmany(CHUNK_ROWS):
            check()
            blobs = b"".join(opened(uid, blob) for uid, blob in batch)
            yield np.frombuffer(blobs, dtype="<f4").reshape(len(batch), size)

    @staticmethod
    def chunks(
        conn: sqlite3.Connection, gallery_id: int, size: int, opened: Opener, check: Callable[[], None]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every (row ids, embeddings (m, size)) in row order, CHUNK_ROWS at a time, as in `sample`."""
        rows = conn.execute(
            "SELECT id, uid, embedding FROM sequences WHERE gallery_id = ? ORDER BY id", (gallery_id,)
        )
        while batch := rows.fetchmany(CHUNK_ROWS):
            check()
            ids = np.array([row[0] for row in batch], dtype=np.int64)
            blobs = b"".join(opened(uid, blob) for _, uid, blob in batch)
            yield ids, np.frombuffer(blobs, dtype="<f4").reshape(len(batch), size)

    def state(self, gallery_id: int) -> tuple[str, dict[str, Any]]:
        """The gallery's model hash, and what an index snapshot of it must match of the database: its
        change counter, size and last row, and the keyring's tag (writer connection, write lock held)."""
        version, model_hash = self.writer.execute(
            "SELECT version, model_hash FROM galleries WHERE id = ?", (gallery_id,)
        ).fetchone()
        count, max_id = self.writer.execute(
            "SELECT count(*), coalesce(max(id), 0) FROM sequences WHERE gallery_id = ?", (gallery_id,)
        ).fetchone()
        tag = {"gallery": gallery_id, "version": version, "count": count, "max_id": max_id}
        return model_hash, tag | self.at_rest.tag(gallery_id)

    # ----- internals

    def _sequence_info(self, gallery: str, gallery_id: int, row: Sequence[Any]) -> SequenceInfo:
        """A `_SEQUENCE_INFO` row as the caller's record (its picture opened)."""
        uid, subject_id, model_hash, metadata, created = row
        metadata = self.at_rest.open_metadata(gallery_id, uid, metadata)
        return SequenceInfo(uid, gallery, subject_id, model_hash, _json(metadata), utc(created))


def gallery_id_of(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT id FROM galleries WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise GalleryNotFoundError(f"no gallery named '{name}'")
    return int(row[0])


def _json(text: str | None) -> dict[str, Any] | None:
    return None if text is None else json.loads(text)


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

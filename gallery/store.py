"""LocalStore: enrolled subjects in SQLite (the truth) with a FAISS index per gallery (a cache).

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
(gallery/crypto.py): the database's keyring seals each value where it is written and opens it where it
is read.

Three layers: this facade (the protocol's methods, the order of commit and index update, the retention
sweep), `gallery.database` (SQLite: the lock file, connections, transactions, every statement) and
`gallery.live` (each gallery's index, id map and attributes, their rebuilds and snapshots).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path

import numpy as np

from gallery import validate
from gallery.core import Enrolment, GalleryCore, NewGallery, Query, check_page
from gallery.database import Database
from gallery.errors import GalleryExistsError, GalleryNotFoundError, ModelMismatchError, StoreClosedError
from gallery.filters import SequenceAttributes
from gallery.live import Live, LiveIndexes
from gallery.previews import split_gei
from gallery.protocol import EXPORT_CHUNK, SequenceRecord
from gallery.records import Erasure, GalleryInfo, GalleryPolicy, GalleryStats, SequenceInfo, SubjectPage
from gallery.schema import Synchronous
from gallery.search import SearchHit, search_subjects
from gallery.settings import IndexSettings

DAY_S = 86_400.0
SWEEP_BATCH = 10_000  # sequences per retention transaction (and per `expire` erasure and audit record)


class LocalStore(GalleryCore[Live]):
    """Galleries of enrolled subjects for one model each, searchable by embedding. Thread-safe.

    A thin facade: `Database` (gallery/database.py) is the SQLite side, `LiveIndexes` (gallery/live.py)
    the in-memory side; each write commits through the one and then applies to the other, under the
    database's write lock."""

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
        """`centres`: model hash -> the (parts, part_dim) centre of that model's calibrated centring
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
        self._db = Database(self.path, synchronous, max_bytes, encryption_key)
        snapshots = self.path.with_name(self.path.name + ".indexes")
        snapshots.mkdir(exist_ok=True)
        self._indexes = LiveIndexes(self._db, self.settings, self._centres, snapshots)
        self._write_lock: threading.Lock = self._db.write_lock  # every write queues on it
        self._live: dict[str, Live] = self._indexes.galleries  # by name
        for gallery_id, name, model_hash, layout, policy in self._db.galleries():
            self._indexes.open(gallery_id, name, model_hash, layout, policy)

    # ----- lifecycle

    def close(self) -> None:
        """Write fresh index snapshots and release the database. Idempotent.

        A rebuild running in the background is abandoned (the old index's snapshot is written instead).
        """
        self._indexes.closing = True
        self.wait_for_index_builds()
        with self._write_lock:
            if self._db.closed:
                return
            if self.settings.snapshots:
                for live in self._live.values():
                    self._indexes.save_snapshot(live)
            self._db.close()

    def wait_for_index_builds(self, timeout: float | None = None) -> bool:
        """Wait until no index is being rebuilt in the background; False if `timeout` ran out first."""
        return self._indexes.wait_for_builds(timeout)

    def check(self) -> None:
        """The local store answers while it is open, and takes writes: after a write found no room
        (StoreFullError), a trial write must commit (it is deleted at once); until one does,
        StoreFullError again."""
        if self._db.closed:
            raise StoreClosedError("the gallery store is closed")
        self._db.check_room()

    def rotate_key(self, new_key: bytes, new_data_keys: bool = False) -> None:
        """Re-wrap the galleries' data keys under the master key `new_key` (with `new_data_keys`, also
        re-encrypt every embedding and picture under fresh data keys) in one transaction: a crash leaves
        the store whole under the old key or the new one. Snapshots sealed under replaced data keys are
        stale by their tag: rebuilt at the next start, rewritten at close."""
        self._db.rotate_key(new_key, new_data_keys)

    # ----- galleries

    def _create(self, new: NewGallery) -> None:
        db = self._db
        with db.writing():
            try:
                gallery_id = db.transaction(lambda: db.insert_gallery(new))
            except sqlite3.IntegrityError as exc:
                raise GalleryExistsError(f"gallery '{new.name}' already exists") from exc
            self._indexes.open(gallery_id, new.name, new.model_hash, new.layout, new.policy)

    def set_policy(self, name: str, policy: GalleryPolicy) -> GalleryInfo:
        """Change what a gallery keeps. Turning pictures off also erases the pictures it holds; a shorter
        retention takes effect at the next sweep."""
        db = self._db
        with db.writing():
            live = self._gallery(name)
            db.transaction(lambda: db.update_policy(live.id, policy))
            live.policy = policy
            if not policy.store_pictures:
                db.checkpoint()
        return self.get_gallery(name)

    def get_gallery(self, name: str) -> GalleryInfo:
        return self._db.get_gallery(name)

    def list_galleries(self) -> list[GalleryInfo]:
        return self._db.list_galleries()

    def delete_gallery(self, name: str) -> None:
        """Erase a gallery and everything it holds (logged as one erasure without ids: all of it)."""
        db = self._db
        with db.writing():
            live = self._gallery(name)
            db.transaction(lambda: db.delete_gallery(live.id, name))
            self._indexes.forget(live)
            db.checkpoint()

    # ----- enrolment and removal

    def _enroll(self, checked: Live, enrolment: Enrolment) -> list[SequenceInfo]:
        """In one transaction (all or none)."""
        db, vectors, subject_id = self._db, enrolment.vectors, enrolment.subject_id
        with db.writing():
            live = self._gallery(checked.name)  # it may have been deleted (or re-created) while we validated
            if live.model_hash != checked.model_hash:
                raise ModelMismatchError(live.name, live.model_hash, checked.model_hash)
            metadata_json = enrolment.metadata_json
            if not live.policy.store_pictures:
                metadata_json = [validate.metadata(split_gei(m)[0]) for m in enrolment.metadata]
            infos, new_rows = db.transaction(
                lambda: db.insert_sequences(
                    live.id, live.name, live.model_hash, subject_id, vectors, metadata_json, enrolment.uids
                )
            )
            if new_rows:
                ids = np.array([row for row, _ in new_rows], dtype=np.int64)
                new = [i for _, i in new_rows]
                found = [enrolment.attributes[i] for i in new]
                added = (ids, vectors[new], subject_id, [infos[i] for i in new], found)
                self._indexes.apply(live, add=added)
        return infos

    def delete_subject(self, name: str, subject_id: str) -> None:
        """Remove a subject and all its sequences."""
        db = self._db
        with db.writing():
            live = self._gallery(name)
            self._erased(live, db.transaction(lambda: db.delete_subject(live.id, name, subject_id)))

    def delete_sequence(self, name: str, sequence_id: str) -> None:
        """Remove one sequence; a subject left with no sequences is removed too."""
        db = self._db
        with db.writing():
            live = self._gallery(name)
            self._erased(live, db.transaction(lambda: db.delete_sequence(live.id, name, sequence_id)))

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
        db = self._db
        with db.writing():
            live = self._live.get(name)
            if live is None or live.policy.retention_days is None:
                return None
            cutoff = now.timestamp() - live.policy.retention_days * DAY_S
            removed, erasure = db.transaction(lambda: db.expire(live.id, name, cutoff, now, SWEEP_BATCH))
            if removed:
                self._erased(live, removed)
            return erasure

    def erasures(self, gallery: str | None = None, since: datetime | None = None) -> list[Erasure]:
        """The erasure log, oldest first: of one gallery (also one deleted since), from `since` on."""
        return self._db.erasures(gallery, since)

    # ----- listing

    def list_subjects(self, name: str, offset: int = 0, limit: int = 100) -> SubjectPage:
        check_page(offset, limit)
        return self._db.list_subjects(name, offset, limit)

    def list_sequences(self, name: str, subject_id: str) -> list[SequenceInfo]:
        return self._db.list_sequences(name, subject_id)

    def get_sequence(self, name: str, sequence_id: str) -> SequenceInfo:
        return self._db.get_sequence(name, sequence_id)

    def iter_records(self, name: str, chunk: int = EXPORT_CHUNK) -> Iterator[list[SequenceRecord]]:
        """Every sequence with its embedding in row order, `chunk` rows at a time, from one read
        transaction on a connection of its own (a consistent view; writers go on meanwhile)."""
        return self._db.iter_records(name, chunk)

    def get_embedding(self, name: str, sequence_id: str) -> np.ndarray:
        """A stored sequence's embedding (D,) float32, per-part normalised, as enrolled."""
        return self._db.get_embedding(name, sequence_id)

    def subject_embeddings(self, name: str, subject_id: str) -> tuple[list[str], np.ndarray]:
        """A subject's sequence ids and their embeddings (n, D), in enrolment order."""
        return self._db.subject_embeddings(name, subject_id)

    # ----- search

    def _search(self, live: Live, query: Query) -> list[list[SearchHit]]:
        """Under the gallery's read lock. A filter becomes the index ids it matches: the index searches
        only those (gallery.index `_search_among`) and the aggregation counts only them, so its "enough
        neighbours" loop stops exactly when the matching sequences are exhausted."""
        with live.lock.read():
            index = live.index
            sizes: Mapping[str, int] = live.subject_sizes
            if query.sequence_filter is None or query.sequence_filter.is_empty:
                search, ntotal = index.search, index.ntotal
            else:
                ids, sizes = live.attributes.select(query.sequence_filter)
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

    def centre(self, model_hash: str) -> np.ndarray | None:
        """The (parts, part_dim) centre this store's galleries of `model_hash` are scored with, if any."""
        return self._centres.get(validate.model_hash(model_hash))

    def stats(self) -> list[GalleryStats]:
        """Sizes for metrics, from memory (LiveIndexes.stats: never waits for a search or a write)."""
        return self._indexes.stats()

    # ----- internals

    def _gallery(self, name: str) -> Live:
        if self._db.closed:
            raise StoreClosedError("the gallery store is closed")
        live = self._live.get(name)
        if live is None:
            raise GalleryNotFoundError(f"no gallery named '{name}'")
        return live

    def _erased(self, live: Live, rows: list[int]) -> None:
        """After an erasure committed (write lock held): the index forgets the rows and the gallery's
        snapshot goes (LiveIndexes.erased), and the WAL (whose frames hold them) is checkpointed into
        the database, where secure_delete zeroed them, and truncated."""
        self._indexes.erased(live, rows)
        self._db.checkpoint()


def _with_attributes(live: Live, hits: list[SearchHit]) -> list[SearchHit]:
    """Hits with their best sequence's attributes, from memory (read lock held)."""
    table = live.attributes
    return [replace(hit, attributes=table.get(hit.sequence_id) or SequenceAttributes()) for hit in hits]

"""MilvusStore: galleries on a Milvus server that several API replicas share (the `milvus` store).

Layout (docs/gallery.md, "The Milvus store"): per gallery two collections in the configured database,
named from the gallery name (`gaitlu_seq_<name>`, `gaitlu_sub_<name>`, escaped to Milvus' alphabet):
- sequences: primary key `uid` (the public sequence id, VARCHAR), `subject`, `metadata` (the JSON text),
  `created`, the filterable attributes as scalar fields (`camera`, `site` VARCHAR, `captured_ts` DOUBLE,
  all nullable, `tags` ARRAY<VARCHAR>), and `embedding`: the full per-part-normalised FLOAT_VECTOR (up to
  Milvus' 32,768 dims; GaitSSB's 31 x 512 = 15,872 fits), so scores are exact mean per-part cosines.
  The gallery's model hash, layout, creation time and metadata are properties of this collection: they
  come into being with it, atomically, and creating a collection that exists fails, so two replicas
  creating one gallery cannot both succeed.
- subjects: primary key `sid` and `created` (and a 2-d placeholder vector: Milvus needs one), so that
  counting and listing subjects never scans the sequences.

Every read and search runs at consistency level Strong: Milvus answers only once its query nodes have
applied every write acknowledged before the request started, whichever proxy (replica) took it, so an
enrolment that returned is found by the next search on any replica. (Bounded or Session consistency
would be cheaper but only guarantee a client its own writes, and each replica is its own client.)

Milvus has no multi-row transactions. What holds instead:
- uniqueness: a sequence's primary key IS its id, and rows are written with upsert (delete + insert of
  that key), so a retried or concurrently repeated enrolment leaves one row per id, never two;
- all or none: every check (model, shapes, metadata, ids already held with another subject or embedding)
  runs before the first write, and one enrolment is one upsert request into a single-shard collection:
  one message in Milvus' write-ahead log. A crash of the *server* mid-request can still leave a prefix;
  a client that retries with the same sequence ids completes it (the rows held already are retries);
- not atomic: the subject row is written after the sequences and pruned after the last sequence goes
  (rechecked after the prune, so a racing enrolment keeps it); a process killed in between leaves a
  subject listed with no sequences, or sequences whose subject is missing from listings until the next
  enrolment of that subject. Two clients enrolling the same *new* id with different content at the
  same instant both succeed and the later write wins (client ids are meant for one client's retries).

Servers without nullable fields (Milvus before 2.5, e.g. the 2.3 standalone server that the `milvus`
package on PyPI ships) create the attribute fields without their nullable flag, and refuse NULL in them.
A gallery on such a server (its description says so: the fields are not nullable) keeps a missing camera
or site as "" and a missing capture time as NO_TIME instead; "" is no valid attribute value and NO_TIME
lies before every real time, so filters and hits read them as missing, as NULL is on a newer server.

Erasure: a delete marks rows deleted (a delta log); the store then flushes and asks for a compaction,
which on a Milvus cluster rewrites the segments without them, and its garbage collector removes the old
segment files from object storage after `dataCoord.gc.dropTolerance`. Until then, and on milvus-lite
(whose compaction leaves the segment as it is), the erased vectors stay in the server's data files. So
this store keeps neither an erasure log nor gallery policies: retention and `store_pictures=false`
are refused at creation, not silently ignored (docs/privacy.md).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import numpy as np
from pymilvus import DataType, MilvusClient

from gaitlu.embedding import EmbeddingLayout
from gallery import validate
from gallery.core import Enrolment, GalleryCore, NewGallery, Query, check_page, utc
from gallery.errors import (
    GalleryError,
    GalleryExistsError,
    GalleryNotFoundError,
    InvalidInputError,
    SequenceNotFoundError,
    StoreClosedError,
    StoreUnavailableError,
    SubjectNotFoundError,
)
from gallery.filters import MAX_TAGS, SequenceAttributes, SequenceFilter
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
from gallery.search import SearchHit, search_subjects
from gallery.settings import MilvusSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
SEQUENCES, SUBJECTS = "gaitlu_seq_", "gaitlu_sub_"
PROPERTY = "gaitlu."
FORMAT = "1"  # the layout above; a later one migrates or refuses, never misreads
MAX_DIM = 32_768  # Milvus' largest FLOAT_VECTOR
MAX_LIMIT = 16_384  # Milvus' largest top-k and query window
ID_BYTES = 128  # ids are ASCII (gallery.validate)
TEXT_BYTES = 256  # attribute values: 64 characters of up to 4 UTF-8 bytes
METADATA_BYTES = validate.MAX_METADATA_BYTES
EXACT_TYPES = ("FLAT", "BRUTE_FORCE")
SHAPE_TTL_S = 60.0
NO_TIME = -1.0e300  # captured_ts of a sequence without one, where the server has no NULL (see above)
_ESCAPES = {"_": "__", ".": "_d", "-": "_h"}
_UNESCAPES = {"_": "_", "d": ".", "h": "-"}


def collection(prefix: str, gallery: str) -> str:
    """A gallery name (A-Za-z0-9._-) -> a Milvus collection name (A-Za-z0-9_), one to one."""
    return prefix + "".join(_ESCAPES.get(c, c) for c in gallery)


def gallery_of(name: str) -> str | None:
    """The gallery a sequences collection holds, or None for collections that are not ours."""
    if not name.startswith(SEQUENCES):
        return None
    out, chars = [], iter(name[len(SEQUENCES) :])
    for c in chars:
        if c == "_":
            c = _UNESCAPES.get(next(chars, ""), "")
            if not c:
                return None
        out.append(c)
    return "".join(out)


def literal(value: str) -> str:
    """A string as a Milvus expression literal (values are printable: only quote and backslash need it)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _values(values: Sequence[str] | frozenset[str]) -> str:
    return "[" + ", ".join(literal(v) for v in sorted(values)) + "]"


def filter_expression(f: SequenceFilter | None, nullable: bool = True) -> str:
    """A SequenceFilter as a Milvus boolean expression over the scalar fields ("" matches everything).

    A missing attribute is NULL (or an empty tag list), and NULL satisfies no comparison: the reference
    semantics of `SequenceFilter.matches`. Without nullable fields a missing camera or site is "", which
    no filter value equals, and a missing time NO_TIME, which an upper bound alone would admit: excluded.
    """
    if f is None:
        return ""
    terms = []
    if f.camera is not None:
        terms.append(f"camera in {_values(f.camera)}")
    if f.site is not None:
        terms.append(f"site in {_values(f.site)}")
    if f.captured_from is not None:
        terms.append(f"captured_ts >= {f.captured_from.timestamp()!r}")
    if f.captured_to is not None:
        terms.append(f"captured_ts < {f.captured_to.timestamp()!r}")
        if not nullable and f.captured_from is None:
            terms.append(f"captured_ts > {NO_TIME!r}")
    if f.tags_all:
        terms.append(f"array_contains_all(tags, {_values(f.tags_all)})")
    if f.tags_any is not None:
        terms.append(f"array_contains_any(tags, {_values(f.tags_any)})")
    return " and ".join(terms)


@dataclass(frozen=True)
class _Gallery:
    name: str
    model_hash: str
    layout: EmbeddingLayout
    created: float
    metadata: dict[str, Any] | None
    index_type: str
    nullable: bool = True  # whether the server kept the attribute fields nullable (Milvus >= 2.5)

    @property
    def sequences(self) -> str:
        return collection(SEQUENCES, self.name)

    @property
    def subjects(self) -> str:
        return collection(SUBJECTS, self.name)


class _Sizes(Mapping[str, int]):
    """Subject sizes for the aggregation: the subject count, and the sizes fetched for the subjects a
    search found fewer than top_m sequences of (the only ones the aggregation asks about)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.known: dict[str, int] = {}

    def __getitem__(self, key: str) -> int:
        return self.known[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.known)

    def __len__(self) -> int:
        return self.count


class MilvusStore(GalleryCore[_Gallery]):
    """Galleries on a Milvus server; thread-safe (one gRPC channel, shared), no state of its own beyond
    the connection: every replica sees the same galleries."""

    def __init__(self, settings: MilvusSettings) -> None:
        self.settings = settings
        self._timeout = settings.timeout_s
        self._closed = False
        self._close_lock = threading.Lock()
        self._shapes: dict[str, tuple[float, float]] = {}  # gallery -> (sequences per subject, when)
        try:
            self._client = MilvusClient(uri=settings.uri, token=settings.token or "", timeout=self._timeout)
            if settings.db_name != "default":
                if settings.db_name not in self._client.list_databases(timeout=self._timeout):
                    try:
                        self._client.create_database(settings.db_name, timeout=self._timeout)
                    except Exception:  # created meanwhile by another replica: fine if it exists now
                        if settings.db_name not in self._client.list_databases(timeout=self._timeout):
                            raise
                self._client.use_database(settings.db_name)
            self._client.list_collections(timeout=self._timeout)  # a cached channel may hide a dead server
        except Exception as exc:
            raise StoreUnavailableError(
                f"cannot reach the Milvus gallery server at {settings.uri}: {exc}"
            ) from exc

    # ----- lifecycle

    def close(self) -> None:
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._client.close()

    def check(self) -> None:
        """Raise StoreUnavailableError unless the server answers (the replica's readiness)."""
        self._call("answer", lambda: self._client.list_collections(timeout=self._timeout))

    # ----- galleries

    def _check_policy(self, policy: GalleryPolicy) -> None:
        _refuse_policy(policy)

    def _create(self, new: NewGallery) -> None:
        """Both collections, indexed and loaded. Exclusive: if the name is taken, by this replica or
        another, GalleryExistsError."""
        name, model_hash, layout = new.name, new.model_hash, new.layout
        if layout.size > MAX_DIM:
            raise InvalidInputError(f"embeddings of {layout.size} floats exceed Milvus' {MAX_DIM} dimensions")
        index = self.settings.index
        gallery = _Gallery(name, model_hash, layout, time.time(), new.metadata, index.type)
        properties = {
            PROPERTY + "format": FORMAT,
            PROPERTY + "name": name,
            PROPERTY + "model_hash": model_hash,
            PROPERTY + "parts": str(layout.parts),
            PROPERTY + "channels": str(layout.part_dim),
            PROPERTY + "created": repr(gallery.created),
            PROPERTY + "metadata": new.metadata_json or "null",
            PROPERTY + "index": index.type,
        }
        client = self._client
        if self._call("look up a gallery", lambda: client.has_collection(gallery.sequences)):
            raise GalleryExistsError(f"gallery '{name}' already exists")
        params = client.prepare_index_params()
        params.add_index("embedding", index_type=index.type, metric_type="IP", params=dict(index.params))
        try:
            client.create_collection(
                gallery.sequences,
                schema=self._sequence_schema(layout.size),
                index_params=params,
                consistency_level="Strong",
                num_shards=1,  # one enrolment = one write-ahead-log message
                properties=properties,
                timeout=self._timeout,
            )
        except Exception as exc:
            if self._appears(gallery.sequences):  # lost a race with another creator
                raise GalleryExistsError(f"gallery '{name}' already exists") from exc
            raise StoreUnavailableError(f"the Milvus gallery server could not create '{name}'") from exc

        def subjects() -> None:
            if client.has_collection(gallery.subjects, timeout=self._timeout):  # left by a deletion cut short
                client.drop_collection(gallery.subjects, timeout=self._timeout)
            params = client.prepare_index_params()
            params.add_index("placeholder", index_type="FLAT", metric_type="IP")
            client.create_collection(
                gallery.subjects,
                schema=self._subject_schema(),
                index_params=params,
                consistency_level="Strong",
                num_shards=1,
                timeout=self._timeout,
            )

        self._call("create a gallery", subjects)

    def get_gallery(self, name: str) -> GalleryInfo:
        return self._info(self._gallery(name))

    def list_galleries(self) -> list[GalleryInfo]:
        names = self._call("list galleries", lambda: self._client.list_collections(timeout=self._timeout))
        found = []
        for name in sorted(n for c in names if (n := gallery_of(c)) is not None):
            try:
                found.append(self.get_gallery(name))
            except GalleryNotFoundError:  # deleted meanwhile
                continue
        return found

    def set_policy(self, name: str, policy: GalleryPolicy) -> GalleryInfo:
        """Only the default policy (see the module docstring)."""
        _refuse_policy(policy)
        return self.get_gallery(name)

    def sweep_expired(self, now: datetime) -> list[Erasure]:
        """Nothing expires: no gallery here has a retention period."""
        return []

    def erasures(self, gallery: str | None = None, since: datetime | None = None) -> list[Erasure]:
        raise InvalidInputError(
            "the milvus gallery store keeps no erasure log: the audit trail's delete_subject, "
            "delete_sequence and delete_gallery records list the erasures (GET /audit)"
        )

    def delete_gallery(self, name: str) -> None:
        """Drop the sequences collection first: the gallery is gone from then on, atomically."""
        gallery = self._gallery(name)
        self._call("delete a gallery", lambda: self._client.drop_collection(gallery.sequences))
        self._call("delete a gallery", lambda: self._client.drop_collection(gallery.subjects))

    # ----- enrolment and removal

    def _enroll(self, gallery: _Gallery, enrolment: Enrolment) -> list[SequenceInfo]:
        """The ids held already checked as retries, then one upsert (see the module docstring)."""
        name, subject_id, vectors = gallery.name, enrolment.subject_id, enrolment.vectors
        metadata_json, attrs, uids = enrolment.metadata_json, enrolment.attributes, enrolment.uids
        held: dict[str, dict[str, Any]] = {}
        if uids is not None:
            rows = self._query(
                gallery.sequences,
                f"uid in {_values(uids)}",
                ["uid", "subject", "metadata", "created", "embedding"],
            )
            held = {row["uid"]: row for row in rows}
            for uid, vector in zip(uids, vectors, strict=True):
                if uid in held:
                    row = held[uid]
                    stored = np.asarray(row["embedding"], dtype="<f4").tobytes()
                    validate.retry(
                        name, uid, subject_id, vector.astype("<f4").tobytes(), (row["subject"], stored)
                    )
        now = time.time()
        ids = uids if uids is not None else [uuid.uuid4().hex for _ in vectors]
        infos, rows = [], []
        for i, uid in enumerate(ids):
            if uid in held:
                infos.append(self._sequence_info(gallery, held[uid]))
                continue
            row = {"uid": uid, "subject": subject_id, "metadata": metadata_json[i] or "", "created": now}
            rows.append(row | _attribute_fields(attrs[i], gallery.nullable) | {"embedding": vectors[i]})
            text = metadata_json[i]
            given_metadata = json.loads(text) if text is not None else None
            infos.append(
                SequenceInfo(uid, gallery.name, subject_id, gallery.model_hash, given_metadata, utc(now))
            )
        if rows:
            self._call("enrol", lambda: self._client.upsert(gallery.sequences, rows, timeout=self._timeout))
        self._keep_subject(gallery, subject_id, now)  # also repairs one a crash left out (a full retry)
        return infos

    def delete_subject(self, name: str, subject_id: str) -> None:
        """Remove a subject and all its sequences."""
        gallery = self._gallery(name)
        if not _is_id(subject_id) or (
            not self._query(gallery.subjects, f"sid == {literal(subject_id)}", ["sid"])
            and not self._count(gallery.sequences, f"subject == {literal(subject_id)}")
        ):
            raise SubjectNotFoundError(f"gallery '{name}' has no subject '{subject_id}'")
        expr = f"subject == {literal(subject_id)}"
        self._call(
            "delete", lambda: self._client.delete(gallery.sequences, filter=expr, timeout=self._timeout)
        )
        self._prune_subject(gallery, subject_id)
        self._compact(gallery)

    def delete_sequence(self, name: str, sequence_id: str) -> None:
        """Remove one sequence; a subject left with no sequences is removed too."""
        gallery = self._gallery(name)
        rows = (
            self._query(gallery.sequences, f"uid == {literal(sequence_id)}", ["subject"])
            if _is_id(sequence_id)
            else []
        )
        if not rows:
            raise SequenceNotFoundError(f"gallery '{name}' has no sequence '{sequence_id}'")
        self._call(
            "delete",
            lambda: self._client.delete(gallery.sequences, ids=[sequence_id], timeout=self._timeout),
        )
        self._prune_subject(gallery, rows[0]["subject"])
        self._compact(gallery)

    # ----- listing

    def list_subjects(self, name: str, offset: int = 0, limit: int = 100) -> SubjectPage:
        """One page by subject id. Milvus returns rows in no order: the subject ids are read and sorted
        here (subjects only, never the sequences), so a page costs O(subjects)."""
        check_page(offset, limit)
        gallery = self._gallery(name)
        subjects = sorted(
            (row["sid"], row["created"])
            for batch in self._iterate(gallery.subjects, "", ["sid", "created"], EXPORT_CHUNK)
            for row in batch
        )
        page = subjects[offset : offset + limit]
        sizes: Counter[str] = Counter()
        if page:
            expr = f"subject in {_values([sid for sid, _ in page])}"
            for batch in self._iterate(gallery.sequences, expr, ["subject"], EXPORT_CHUNK):
                sizes.update(row["subject"] for row in batch)
        data = [SubjectInfo(sid, sizes[sid], utc(created)) for sid, created in page]
        return SubjectPage(data=data, count=len(subjects), offset=offset, limit=limit)

    def list_sequences(self, name: str, subject_id: str) -> list[SequenceInfo]:
        gallery = self._gallery(name)
        rows = self._subject_rows(gallery, subject_id, ["uid", "subject", "metadata", "created"])
        return [self._sequence_info(gallery, row) for row in rows]

    def get_sequence(self, name: str, sequence_id: str) -> SequenceInfo:
        gallery = self._gallery(name)
        fields = ["uid", "subject", "metadata", "created"]
        rows = (
            self._query(gallery.sequences, f"uid == {literal(sequence_id)}", fields)
            if _is_id(sequence_id)
            else []
        )
        if not rows:
            raise SequenceNotFoundError(f"gallery '{name}' has no sequence '{sequence_id}'")
        return self._sequence_info(gallery, rows[0])

    def iter_records(self, name: str, chunk: int = EXPORT_CHUNK) -> Iterator[list[SequenceRecord]]:
        """Every sequence with its embedding, by sequence id, `chunk` at a time (a query iterator)."""
        gallery = self._gallery(name)
        fields = ["uid", "subject", "metadata", "created", "embedding"]
        for batch in self._iterate(gallery.sequences, "", fields, chunk):
            yield [
                SequenceRecord(
                    self._sequence_info(gallery, row), np.asarray(row["embedding"], dtype=np.float32)
                )
                for row in batch
            ]

    def get_embedding(self, name: str, sequence_id: str) -> np.ndarray:
        gallery = self._gallery(name)
        rows = (
            self._query(gallery.sequences, f"uid == {literal(sequence_id)}", ["uid", "embedding"])
            if _is_id(sequence_id)
            else []
        )
        if not rows:
            raise SequenceNotFoundError(f"gallery '{name}' has no sequence '{sequence_id}'")
        return np.asarray(rows[0]["embedding"], dtype=np.float32)

    def subject_embeddings(self, name: str, subject_id: str) -> tuple[list[str], np.ndarray]:
        """A subject's sequence ids and embeddings (n, D), in enrolment order (time, then id)."""
        gallery = self._gallery(name)
        rows = self._subject_rows(gallery, subject_id, ["uid", "created", "embedding"])
        vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)  # (n, D)
        return [row["uid"] for row in rows], vectors

    def centre(self, model_hash: str) -> np.ndarray | None:
        """None: a Milvus gallery scores vectors as enrolled (gallery.stores refuses centred models)."""
        return None

    # ----- search

    def _search(self, gallery: _Gallery, query: Query) -> list[list[SearchHit]]:
        """The local store's aggregation (gallery/search.py) over Milvus neighbours, the filter applied
        inside Milvus' search."""
        expr = filter_expression(query.sequence_filter, gallery.nullable)
        k, top_m, threshold = query.k, query.top_m, query.threshold
        # Counting is a scan on some servers (a third of a second on milvus-lite at 10k): the aggregation
        # learns "nothing more" from a short answer instead, and a cached sequences-per-subject figure
        # only sizes the first request. MAX_LIMIT neighbours per query is as far as a search goes.
        sizes = _Sizes(max(1, round(MAX_LIMIT / self._per_subject(gallery))))
        sequences: dict[int, tuple[str, str]] = {}  # a per-call id for each neighbour seen
        keys: dict[str, int] = {}
        found_attributes: dict[str, SequenceAttributes] = {}  # by sequence id, for the hits
        search_params = {"metric_type": "IP", "params": dict(self.settings.index.search_params)}

        def neighbours(batch: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
            limit = min(wanted, MAX_LIMIT)
            found = self._call(
                "search",
                lambda: self._client.search(
                    gallery.sequences,
                    data=list(batch),
                    limit=limit,
                    filter=expr,
                    # the key as a field too: servers before 2.5 name it "id" in a hit, not "uid"
                    output_fields=["uid", "subject", *ATTRIBUTE_FIELDS],
                    anns_field="embedding",
                    search_params=search_params,
                    consistency_level="Strong",
                    timeout=self._timeout,
                ),
            )
            # Padded to `wanted` (-1): fewer than asked tells the aggregation nothing more is in reach.
            scores = np.full((len(batch), wanted), -np.inf, dtype=np.float32)
            ids = np.full((len(batch), wanted), -1, dtype=np.int64)
            short: Counter[str] = Counter()
            for row, hits in enumerate(found):
                per_subject: Counter[str] = Counter()
                for col, hit in enumerate(hits):
                    uid, subject = str(hit["entity"]["uid"]), hit["entity"]["subject"]
                    found_attributes.setdefault(uid, _attributes_of(hit["entity"]))
                    key = keys.setdefault(uid, len(keys))
                    sequences[key] = (subject, uid)
                    scores[row, col], ids[row, col] = hit["distance"], key
                    per_subject[subject] += 1
                short.update(s for s, c in per_subject.items() if c < top_m and s not in sizes.known)
            if short:  # top_m > 1: does a subject have more sequences than the neighbours showed?
                sizes.known.update(self._subject_sizes(gallery, list(short), expr))
            return scores, ids

        found = search_subjects(
            neighbours, query.vectors, MAX_LIMIT, gallery.layout.parts, sequences, sizes, k, top_m, threshold
        )
        return [[replace(h, attributes=found_attributes[h.sequence_id]) for h in hits] for hits in found]

    def stats(self) -> list[GalleryStats]:
        """Sizes per gallery: two count queries each."""
        stats = []
        for info in self.list_galleries():
            gallery = self._gallery(info.name)
            kind: Literal["exact", "approximate"] = (
                "exact" if gallery.index_type in EXACT_TYPES else "approximate"
            )
            stats.append(GalleryStats(info.name, info.subject_count, info.sequence_count, kind, "server", 0))
        return stats

    # ----- internals

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """A Milvus call; any failure of the server or the connection is a StoreUnavailableError."""
        if self._closed:
            raise StoreClosedError("the gallery store is closed")
        try:
            return call()
        except GalleryError:
            raise
        except Exception as exc:
            logger.warning("Milvus failed to %s: %s", what, exc)
            raise StoreUnavailableError(f"the gallery server failed to {what}; try again") from exc

    def _appears(self, name: str, wait_s: float = 2.0) -> bool:
        """Whether collection `name` exists or shows up within `wait_s` (a racing creator that won may
        still be finishing: milvus-lite refuses the loser before the winner's collection is listed)."""
        deadline = time.monotonic() + wait_s
        while not self._call("look up a gallery", lambda: self._client.has_collection(name)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _query(self, name: str, expr: str, fields: list[str], limit: int = MAX_LIMIT) -> list[dict[str, Any]]:
        return self._call(
            "read",
            lambda: self._client.query(
                name,
                filter=expr,
                output_fields=fields,
                limit=limit,
                consistency_level="Strong",
                timeout=self._timeout,
            ),
        )

    def _count(self, name: str, expr: str) -> int:
        rows = self._call(
            "count",
            lambda: self._client.query(
                name,
                filter=expr,
                output_fields=["count(*)"],
                consistency_level="Strong",
                timeout=self._timeout,
            ),
        )
        return int(rows[0]["count(*)"])

    def _iterate(
        self, name: str, expr: str, fields: list[str], chunk: int = EXPORT_CHUNK
    ) -> Iterator[list[dict[str, Any]]]:
        """Rows in batches of `chunk` through a query iterator (by primary key; memory bounded by chunk)."""
        iterator = self._call(
            "read",
            lambda: self._client.query_iterator(
                name, batch_size=chunk, filter=expr, output_fields=fields, timeout=self._timeout
            ),
        )
        try:
            while batch := self._call("read", iterator.next):
                yield list(batch)
        finally:
            iterator.close()

    def _per_subject(self, gallery: _Gallery) -> float:
        """Sequences per subject, counted at most every SHAPE_TTL_S per gallery (a hint, never a bound)."""
        now = time.monotonic()
        cached = self._shapes.get(gallery.name)
        if cached is None or now - cached[1] > SHAPE_TTL_S:
            subjects = self._count(gallery.subjects, "")
            cached = (self._count(gallery.sequences, "") / max(1, subjects), now)
            self._shapes[gallery.name] = cached
        return max(1.0, cached[0])

    def _subject_sizes(self, gallery: _Gallery, subjects: list[str], expr: str) -> Counter[str]:
        where = f"subject in {_values(subjects)}" + (f" and ({expr})" if expr else "")
        sizes: Counter[str] = Counter()
        for batch in self._iterate(gallery.sequences, where, ["subject"]):
            sizes.update(row["subject"] for row in batch)
        return sizes

    def _compact(self, gallery: _Gallery) -> None:
        """After a delete (acknowledged already): flush the deletion into a sealed segment and ask the
        server to compact the collection (rewrite its segments without the deleted rows), which it does
        after this returns. A server that refuses either is logged: the rows are deleted, not erased."""
        client, target = self._client, gallery.sequences
        try:
            client.flush(target, timeout=self._timeout)
            client.compact(target, timeout=self._timeout)
        except Exception as exc:
            logger.warning("gallery '%s': Milvus did not compact after a deletion: %s", gallery.name, exc)

    def _gallery(self, name: str) -> _Gallery:
        """The gallery's description, read from the server on each call (another replica may have
        deleted or re-created it)."""
        if not isinstance(name, str) or not validate.NAME_RE.fullmatch(name):
            raise GalleryNotFoundError(f"no gallery named '{name}'")
        target = collection(SEQUENCES, name)
        try:
            described = self._call(
                "read", lambda: self._client.describe_collection(target, timeout=self._timeout)
            )
        except StoreUnavailableError:
            if not self._call("read", lambda: self._client.has_collection(target, timeout=self._timeout)):
                raise GalleryNotFoundError(f"no gallery named '{name}'") from None
            raise
        props = described.get("properties", {})
        if props.get(PROPERTY + "format") != FORMAT:
            raise StoreUnavailableError(
                f"collection {target} is not a gallery of this gaitlu version (format "
                f"{props.get(PROPERTY + 'format')!r}, expected {FORMAT})"
            )
        layout = EmbeddingLayout(int(props[PROPERTY + "parts"]), int(props[PROPERTY + "channels"]))
        attribute_fields = [f for f in described.get("fields", []) if f.get("name") in ATTRIBUTE_FIELDS[:3]]
        return _Gallery(
            name,
            props[PROPERTY + "model_hash"],
            layout,
            float(props[PROPERTY + "created"]),
            json.loads(props[PROPERTY + "metadata"]),
            props.get(PROPERTY + "index", "FLAT"),
            all(f.get("nullable", False) for f in attribute_fields),
        )

    def _info(self, gallery: _Gallery) -> GalleryInfo:
        return GalleryInfo(
            gallery.name,
            gallery.model_hash,
            gallery.layout,
            gallery.metadata,
            utc(gallery.created),
            self._count(gallery.subjects, ""),
            self._count(gallery.sequences, ""),
        )

    @staticmethod
    def _sequence_info(gallery: _Gallery, row: Mapping[str, Any]) -> SequenceInfo:
        metadata = json.loads(row["metadata"]) if row["metadata"] else None
        return SequenceInfo(
            row["uid"], gallery.name, row["subject"], gallery.model_hash, metadata, utc(row["created"])
        )

    def _subject_rows(self, gallery: _Gallery, subject_id: str, fields: list[str]) -> list[dict[str, Any]]:
        """A subject's sequence rows (`fields`, which include uid and created) in enrolment order."""
        expr = f"subject == {literal(subject_id)}"
        rows = (
            [row for batch in self._iterate(gallery.sequences, expr, fields) for row in batch]
            if _is_id(subject_id)
            else []
        )
        if not rows:
            raise SubjectNotFoundError(f"gallery '{gallery.name}' has no subject '{subject_id}'")
        rows.sort(key=lambda row: (row["created"], row["uid"]))
        return rows

    def _keep_subject(self, gallery: _Gallery, subject_id: str, created: float) -> None:
        """Write the subject row (after its sequences) unless it exists: its first enrolment's time stays."""
        if not self._query(gallery.subjects, f"sid == {literal(subject_id)}", ["sid"]):
            row = {"sid": subject_id, "created": created, "placeholder": [1.0, 0.0]}
            self._call("enrol", lambda: self._client.upsert(gallery.subjects, [row], timeout=self._timeout))

    def _prune_subject(self, gallery: _Gallery, subject_id: str) -> None:
        """Drop the subject row once it has no sequences; recheck, so a racing enrolment keeps it."""
        expr = f"subject == {literal(subject_id)}"
        if self._count(gallery.sequences, expr):
            return
        rows = self._query(gallery.subjects, f"sid == {literal(subject_id)}", ["created"])
        self._call(
            "delete", lambda: self._client.delete(gallery.subjects, ids=[subject_id], timeout=self._timeout)
        )
        if rows and self._count(gallery.sequences, expr):  # an enrolment landed meanwhile: restore it
            self._keep_subject(gallery, subject_id, rows[0]["created"])

    def _sequence_schema(self, dim: int) -> Any:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("uid", DataType.VARCHAR, is_primary=True, max_length=ID_BYTES)
        schema.add_field("subject", DataType.VARCHAR, max_length=ID_BYTES)
        schema.add_field("metadata", DataType.VARCHAR, max_length=METADATA_BYTES)
        schema.add_field("created", DataType.DOUBLE)
        schema.add_field("camera", DataType.VARCHAR, max_length=TEXT_BYTES, nullable=True)
        schema.add_field("site", DataType.VARCHAR, max_length=TEXT_BYTES, nullable=True)
        schema.add_field("captured_ts", DataType.DOUBLE, nullable=True)
        schema.add_field(
            "tags",
            DataType.ARRAY,
            element_type=DataType.VARCHAR,
            max_capacity=MAX_TAGS,
            max_length=TEXT_BYTES,
        )
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
        return schema

    @staticmethod
    def _subject_schema() -> Any:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("sid", DataType.VARCHAR, is_primary=True, max_length=ID_BYTES)
        schema.add_field("created", DataType.DOUBLE)
        schema.add_field("placeholder", DataType.FLOAT_VECTOR, dim=2)
        return schema


def _refuse_policy(policy: GalleryPolicy) -> None:
    if policy != GalleryPolicy():
        raise InvalidInputError(
            "the milvus gallery store keeps every sequence and its picture until deleted: retention_days "
            "and store_pictures=false need the local store (docs/privacy.md)"
        )


def _is_id(value: str) -> bool:
    """Whether `value` could name a subject or sequence at all (others are simply not found)."""
    return isinstance(value, str) and validate.ID_RE.fullmatch(value) is not None


ATTRIBUTE_FIELDS = ("camera", "site", "captured_ts", "tags")


def _attributes_of(entity: Mapping[str, Any]) -> SequenceAttributes:
    """A row's attribute fields (`_attribute_fields`) back as the filter contract's attributes."""
    ts = entity.get("captured_ts")
    return SequenceAttributes(
        camera=entity.get("camera") or None,
        site=entity.get("site") or None,
        captured_at=None if ts is None or ts <= NO_TIME else datetime.fromtimestamp(ts, UTC),
        tags=frozenset(entity.get("tags") or ()),
    )


def _attribute_fields(attrs: SequenceAttributes, nullable: bool = True) -> dict[str, Any]:
    """A sequence's attributes as row fields: None is NULL, or "" / NO_TIME without nullable fields."""
    if nullable:
        return {
            "camera": attrs.camera,
            "site": attrs.site,
            "captured_ts": attrs.captured_ts,
            "tags": sorted(attrs.tags),
        }
    ts = attrs.captured_ts
    return {
        "camera": attrs.camera or "",
        "site": attrs.site or "",
        "captured_ts": NO_TIME if ts is None else ts,
        "tags": sorted(attrs.tags),
    }

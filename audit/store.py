"""AuditStore: an append-only, hash-chained record of what the service did, in SQLite.

Each record is a canonical JSON body (sorted keys, no spaces, ASCII) holding its id, time, action, the
key id that asked, and what was searched, decided or changed, but never the API key nor the input data
(only sha256 digests of it). Its `hash` is sha256(previous record's hash + body), so editing or
deleting a record in the middle breaks the chain at that record or the next (`verify` names it). The
columns beside the body (time, action, gallery, ...) are copies for the filters; `verify` checks them
against the body too.

Durability as the gallery store's (gallery/schema.py): WAL, synchronous=FULL, each append one
transaction, committed (fsynced) before `append` returns, so a caller that answers after it never
acknowledges an action whose record a crash could lose. Appends serialise on one lock and read the
chain's head inside their write transaction (BEGIN IMMEDIATE), so writers in other processes (a
`gaitlu audit sweep`) cannot fork the chain. Triggers refuse UPDATE and DELETE on records: only the
retention sweep lifts them, inside its own transaction.

Retention: `sweep(older_than)` deletes the oldest records (every record up to the newest one older than
the cutoff) and in the same transaction sets the chain's anchor (meta: the id and hash of the last
record deleted) and appends a `retention` record naming that anchor. The chain then starts from the
anchor, and `verify` accepts a missing prefix only when the newest retention record names it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from audit.errors import AlreadyReviewed, AuditRecordNotFound, AuditWriteFailed, NotReviewable

logger = logging.getLogger(__name__)
T = TypeVar("T")

AUDIT_FILE = "audit.db"  # in the service's data folder, beside galleries.db
GENESIS = "0" * 64  # the hash the first record continues from
SCHEMA_VERSION = 1
REQUIRED_CONFIRMATIONS = 2  # distinct keys that must confirm a match (AI Act Article 14(5))

Action = Literal[
    "search",
    "verify",
    "enroll",
    "delete_subject",
    "delete_sequence",
    "create_gallery",
    "delete_gallery",
    "update_gallery",
    "expire",
    "review",
    "retention",
]
ACTIONS: tuple[Action, ...] = (
    "search",
    "verify",
    "enroll",
    "delete_subject",
    "delete_sequence",
    "create_gallery",
    "delete_gallery",
    "update_gallery",
    "expire",
    "review",
    "retention",
)
# match / unknown: a search decided at a threshold; verified / rejected: a verify decided; error: a probe
# that could not be searched. None: no decision was asked (plain top-k) or none applies (changes).
Decision = Literal["match", "unknown", "verified", "rejected", "error"]
Verdict = Literal["confirm", "reject"]
ReviewStateName = Literal["pending", "confirmed", "rejected"]
REVIEWABLE = {("search", "match"), ("verify", "verified")}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    action TEXT NOT NULL,
    key_id TEXT,
    gallery TEXT,
    decision TEXT,
    target INTEGER,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_time ON records (time);
CREATE INDEX IF NOT EXISTS records_gallery ON records (gallery, id);
CREATE INDEX IF NOT EXISTS records_target ON records (target) WHERE target IS NOT NULL;
CREATE TABLE IF NOT EXISTS record_subjects (
    subject_id TEXT NOT NULL,
    record_id INTEGER NOT NULL,
    PRIMARY KEY (subject_id, record_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
"""
_NO_DELETE = """
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only (the retention sweep removes old ones)'); END
"""


def key_id(key: str) -> str:
    """The id an API key is recorded under: a short hash, never the key (`gaitlu audit key-id`)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical(body: dict[str, Any]) -> str:
    """The one text a body is hashed and stored as."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def chain_hash(prev_hash: str, body_text: str) -> str:
    return sha256_hex((prev_hash + body_text).encode())


@dataclass(frozen=True)
class Hit:
    """A subject returned by a search (or the one compared by a verify), with its score and FAR."""

    subject_id: str | None  # None: a verify of two probes, or against a sequence id
    sequence_id: str | None
    score: float
    far: float | None


@dataclass(frozen=True)
class Entry:
    """What a caller records; the store adds id, time and the chain. Empty fields are left out of the
    body. `input_sha256`: digests of the uploaded bytes or of the float32 embedding, one per input."""

    action: Action
    key_id: str | None = None
    request_id: str | None = None
    gallery: str | None = None
    subject_id: str | None = None
    sequence_ids: tuple[str, ...] = ()
    input_sha256: tuple[str, ...] = ()
    hits: tuple[Hit, ...] = ()
    threshold: float | None = None
    max_far: float | None = None
    decision: Decision | None = None
    error: str | None = None  # the error code of a probe that could not be searched
    target: int | None = None  # a review: the record reviewed
    verdict: Verdict | None = None
    note: str | None = None  # a review's free text (the reviewer's own words)
    retention: dict[str, Any] | None = None  # a retention record: what it removed and the new anchor

    def subjects(self) -> set[str]:
        """The subjects a record concerns (the subject filter finds it under each)."""
        found = {self.subject_id, *(h.subject_id for h in self.hits)}
        return {s for s in found if s is not None}


@dataclass(frozen=True)
class Record(Entry):
    id: int = 0
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    prev_hash: str = GENESIS
    hash: str = ""

    def body(self) -> dict[str, Any]:
        """The hashed content: every field but the chain's, empty ones left out."""
        out: dict[str, Any] = {"id": self.id, "time": _time_text(self.time), "action": self.action}
        for f in fields(Entry):
            value = getattr(self, f.name)
            if f.name == "action" or value is None or value == ():
                continue
            if f.name == "hits":
                value = [{**asdict(h), "score": float(h.score), "far": _float(h.far)} for h in value]
            elif f.name in ("threshold", "max_far"):
                value = float(value)  # a numpy float is not JSON
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def exported(self) -> dict[str, Any]:
        """One line of `gaitlu audit export`: the body with its chain (hash = sha256(prev_hash +
        canonical(body)), canonical: sorted keys, no spaces, ASCII)."""
        return {**self.body(), "prev_hash": self.prev_hash, "hash": self.hash}

    @classmethod
    def from_body(cls, body: dict[str, Any], prev_hash: str, hash_: str) -> Record:
        values = dict(body)
        values["time"] = datetime.fromisoformat(values["time"])
        values["hits"] = tuple(Hit(**h) for h in values.get("hits", ()))
        for name in ("sequence_ids", "input_sha256"):
            values[name] = tuple(values.get(name, ()))
        return cls(**values, prev_hash=prev_hash, hash=hash_)


@dataclass(frozen=True)
class ReviewState:
    """A match's reviews: confirmed once REQUIRED_CONFIRMATIONS distinct keys confirmed it and none
    rejected it; rejected as soon as one key rejects it; pending until then."""

    state: ReviewStateName
    confirmed_by: tuple[str | None, ...] = ()
    rejected_by: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class AuditQuery:
    """Filters for `query`, all optional and combined with AND; `since` inclusive, `until` exclusive."""

    since: datetime | None = None
    until: datetime | None = None
    gallery: str | None = None
    subject_id: str | None = None
    actions: tuple[Action, ...] = ()
    key_id: str | None = None
    decision: Decision | None = None
    offset: int = 0
    limit: int = 100
    newest_first: bool = False


@dataclass(frozen=True)
class ChainReport:
    """What `verify` found: `broken_id` is the first record that fails (None: the chain holds)."""

    records: int
    first_id: int | None
    head_id: int | None
    head_hash: str
    broken_id: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _time_text(value: datetime) -> str:
    """UTC, microseconds always written: the texts sort as the times do."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _review_state(reviews: Sequence[tuple[str | None, str]]) -> ReviewState:
    confirmed = tuple(k for k, v in reviews if v == "confirm")
    rejected = tuple(k for k, v in reviews if v == "reject")
    if rejected:
        return ReviewState("rejected", confirmed, rejected)
    state: ReviewStateName = "confirmed" if len(set(confirmed)) >= REQUIRED_CONFIRMATIONS else "pending"
    return ReviewState(state, confirmed, rejected)


def connect(path: Path) -> sqlite3.Connection:
    """As gallery/schema.py's: autocommit (transactions explicit), WAL, every commit fsynced."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class AuditStore:
    """The audit trail of one data folder. Thread-safe; other processes may read it and sweep it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._writer = connect(self.path)
        self._closed = False
        with self._transaction() as conn:
            for statement in _statements(_SCHEMA + ";" + _NO_DELETE):
                conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    @classmethod
    def open_existing(cls, path: str | Path) -> AuditStore:
        """For the CLI: a store that must exist already (a mistyped folder is not a new empty trail)."""
        if not Path(path).is_file():
            raise AuditRecordNotFound(f"no audit trail at {path} (the service writes DATA_DIR/{AUDIT_FILE})")
        return cls(path)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._writer.close()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- writing

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE under the store lock; COMMIT on success (fsynced), else ROLLBACK."""
        conn = self._writer
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # also after a COMMIT that failed (a full disk)
                    conn.execute("ROLLBACK")
                raise

    def append(self, entries: Sequence[Entry]) -> list[Record]:
        """Record `entries` in one transaction, durable when this returns; AuditWriteFailed if not."""
        return self._write(lambda conn: self._append(conn, entries))

    def review(
        self,
        target: int,
        verdict: Verdict,
        *,
        key: str | None,
        request_id: str | None = None,
        note: str | None = None,
    ) -> tuple[Record, ReviewState]:
        """Record `key`'s verdict on the match `target` and return the match's state after it. Refused
        (and nothing written): an unknown record, one that is not a match, or a key's second review."""

        def write(conn: sqlite3.Connection) -> tuple[Record, ReviewState]:
            reviewed = self._get(conn, target)
            if (reviewed.action, reviewed.decision) not in REVIEWABLE:
                what = reviewed.action + (f" ({reviewed.decision})" if reviewed.decision else "")
                raise NotReviewable(
                    f"audit record {target} is a {what}, not a match: only a search's match or a verify's "
                    "'verified' decision is reviewed"
                )
            reviews = self._reviews(conn, [target]).get(target, [])
            if any(k == key for k, _ in reviews):
                raise AlreadyReviewed(
                    f"this key ({key or 'no key: the server has no API keys'}) has reviewed record {target} "
                    f"already; a match is confirmed by {REQUIRED_CONFIRMATIONS} different keys (people)"
                )
            entry = Entry(
                action="review",
                key_id=key,
                request_id=request_id,
                gallery=reviewed.gallery,
                subject_id=reviewed.hits[0].subject_id if reviewed.hits else reviewed.subject_id,
                target=target,
                verdict=verdict,
                note=note,
            )
            [record] = self._append(conn, [entry])
            return record, _review_state([*reviews, (key, verdict)])

        return self._write(write)

    def sweep(self, older_than: datetime) -> int:
        """Delete every record up to the newest one older than `older_than`, re-anchor the chain there
        and record that (one transaction). Returns how many records were deleted."""

        def write(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT MAX(id) FROM records WHERE time < ? AND action != 'retention'",
                (_time_text(older_than),),
            ).fetchone()
            last = row[0] if row else None
            if last is None:
                return 0
            anchor_hash = conn.execute("SELECT hash FROM records WHERE id = ?", (last,)).fetchone()[0]
            deleted = conn.execute("SELECT COUNT(*) FROM records WHERE id <= ?", (last,)).fetchone()[0]
            conn.execute("DROP TRIGGER IF EXISTS records_no_delete")
            conn.execute("DELETE FROM records WHERE id <= ?", (last,))
            conn.execute("DELETE FROM record_subjects WHERE record_id <= ?", (last,))
            conn.execute(_NO_DELETE)
            self._set_anchor(conn, last, anchor_hash)
            entry = Entry(
                action="retention",
                retention={
                    "older_than": _time_text(older_than),
                    "deleted": deleted,
                    "anchor_id": last,
                    "anchor_hash": anchor_hash,
                },
            )
            self._append(conn, [entry])
            return int(deleted)

        removed = self._write(write)
        if removed:
            logger.info("audit retention: %d records older than %s deleted", removed, _time_text(older_than))
        return removed

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            with self._transaction() as conn:
                return work(conn)
        except sqlite3.Error as exc:
            raise AuditWriteFailed(str(exc)) from exc

    def _append(self, conn: sqlite3.Connection, entries: Sequence[Entry]) -> list[Record]:
        head = conn.execute("SELECT id, hash FROM records ORDER BY id DESC LIMIT 1").fetchone()
        last_id, prev_hash = head if head is not None else self._anchor(conn)
        now = datetime.now(UTC)
        records = []
        for entry in entries:
            last_id += 1
            draft = Record(**{f.name: getattr(entry, f.name) for f in fields(Entry)}, id=last_id, time=now)
            text = canonical(draft.body())
            digest = chain_hash(prev_hash, text)
            conn.execute(
                "INSERT INTO records (id, time, action, key_id, gallery, decision, target, body, prev_hash, "
                "hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    last_id,
                    _time_text(now),
                    entry.action,
                    entry.key_id,
                    entry.gallery,
                    entry.decision,
                    entry.target,
                    text,
                    prev_hash,
                    digest,
                ),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO record_subjects (subject_id, record_id) VALUES (?, ?)",
                [(s, last_id) for s in sorted(entry.subjects())],
            )
            records.append(Record.from_body(draft.body(), prev_hash, digest))
            prev_hash = digest
        return records

    @staticmethod
    def _anchor(conn: sqlite3.Connection) -> tuple[int, str]:
        rows = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('anchor_id', 'anchor_hash')"))
        return int(rows.get("anchor_id", 0)), rows.get("anchor_hash", GENESIS)

    @staticmethod
    def _set_anchor(conn: sqlite3.Connection, anchor_id: int, anchor_hash: str) -> None:
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [("anchor_id", str(anchor_id)), ("anchor_hash", anchor_hash)],
        )

    # ----- reading

    def _reader(self) -> closing[sqlite3.Connection]:
        return closing(connect(self.path))

    def get(self, record_id: int) -> Record:
        with self._reader() as conn:
            return self._get(conn, record_id)

    @staticmethod
    def _get(conn: sqlite3.Connection, record_id: int) -> Record:
        row = conn.execute("SELECT body, prev_hash, hash FROM records WHERE id = ?", (record_id,)).fetchone()
        if row is None:
            raise AuditRecordNotFound(
                f"no audit record {record_id} (never written, or removed by the retention sweep)"
            )
        return Record.from_body(json.loads(row[0]), row[1], row[2])

    def query(self, q: AuditQuery) -> tuple[list[Record], int]:
        """One page of the records `q` keeps, by id (oldest first unless `newest_first`), and how many
        it keeps in all."""
        where, args = [], []
        if q.since is not None:
            where.append("time >= ?")
            args.append(_time_text(q.since))
        if q.until is not None:
            where.append("time < ?")
            args.append(_time_text(q.until))
        for column, value in (("gallery", q.gallery), ("key_id", q.key_id), ("decision", q.decision)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if q.actions:
            where.append(f"action IN ({', '.join('?' * len(q.actions))})")
            args.extend(q.actions)
        if q.subject_id is not None:
            where.append("id IN (SELECT record_id FROM record_subjects WHERE subject_id = ?)")
            args.append(q.subject_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = "DESC" if q.newest_first else "ASC"
        with self._reader() as conn:
            total = conn.execute(f"SELECT COUNT(*) FROM records {clause}", args).fetchone()[0]
            rows = conn.execute(
                f"SELECT body, prev_hash, hash FROM records {clause} ORDER BY id {order} LIMIT ? OFFSET ?",
                [*args, q.limit, q.offset],
            ).fetchall()
        return [Record.from_body(json.loads(b), p, h) for b, p, h in rows], int(total)

    def review_states(self, record_ids: Sequence[int]) -> dict[int, ReviewState]:
        """The review state of each reviewable record among `record_ids` (others are left out)."""
        with self._reader() as conn:
            reviews = self._reviews(conn, record_ids)
        return {i: _review_state(reviews.get(i, [])) for i in record_ids}

    @staticmethod
    def _reviews(
        conn: sqlite3.Connection, record_ids: Sequence[int]
    ) -> dict[int, list[tuple[str | None, str]]]:
        found: dict[int, list[tuple[str | None, str]]] = {}
        ids = list(record_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = conn.execute(
                f"SELECT target, key_id, body FROM records WHERE action = 'review' AND target IN "
                f"({', '.join('?' * len(chunk))}) ORDER BY id",
                chunk,
            )
            for target, key, body in rows:
                found.setdefault(target, []).append((key, json.loads(body)["verdict"]))
        return found

    def export(self) -> Iterator[Record]:
        """Every record, oldest first (read in one snapshot)."""
        with self._reader() as conn:
            conn.execute("BEGIN")
            for body, prev_hash, hash_ in conn.execute(
                "SELECT body, prev_hash, hash FROM records ORDER BY id"
            ):
                yield Record.from_body(json.loads(body), prev_hash, hash_)
            conn.execute("COMMIT")

    def verify(self) -> ChainReport:
        """Check the whole chain in one snapshot: each record's hash against its body and the previous
        hash, ids without gaps from the anchor, the filter columns against the body, and a retention
        record for any removed prefix. Stops at the first broken record."""
        with self._reader() as conn:
            conn.execute("BEGIN")
            try:
                return _verify(conn)
            finally:
                conn.execute("COMMIT")


def _verify(conn: sqlite3.Connection) -> ChainReport:
    anchor_id, anchor_hash = AuditStore._anchor(conn)
    expected_id, prev_hash = anchor_id + 1, anchor_hash
    first_id: int | None = None
    count = 0
    newest_retention: dict[str, Any] | None = None
    rows = conn.execute(
        "SELECT id, time, action, key_id, gallery, decision, target, body, prev_hash, hash FROM records "
        "ORDER BY id"
    )

    def broken(record_id: int, problem: str) -> ChainReport:
        return ChainReport(count, first_id, expected_id - 1 or None, prev_hash, record_id, problem)

    for record_id, time, action, key, gallery, decision, target, text, stored_prev, stored_hash in rows:
        first_id = record_id if first_id is None else first_id
        if record_id != expected_id:
            gap = f"{expected_id}" if record_id == expected_id + 1 else f"{expected_id}-{record_id - 1}"
            return broken(record_id, f"record(s) {gap} before it are missing (deleted?)")
        if stored_prev != prev_hash:
            return broken(record_id, "its prev_hash is not the previous record's hash (a record before it "
                          "was changed or removed)")  # fmt: skip
        if chain_hash(prev_hash, text) != stored_hash:
            return broken(record_id, "its hash does not match its content (edited?)")
        try:
            body = json.loads(text)
        except json.JSONDecodeError:
            return broken(record_id, "its body is not JSON")
        columns = {
            "id": record_id, "time": time, "action": action, "key_id": key, "gallery": gallery,
            "decision": decision, "target": target,
        }  # fmt: skip
        differ = sorted(name for name, value in columns.items() if body.get(name) != value)
        if differ:
            return broken(
                record_id, f"its column(s) {', '.join(differ)} differ from its hashed content (edited?)"
            )
        if action == "retention":
            newest_retention = body.get("retention") or {}
        count += 1
        expected_id, prev_hash = record_id + 1, stored_hash
    if anchor_id and (
        newest_retention is None
        or (newest_retention.get("anchor_id"), newest_retention.get("anchor_hash"))
        != (anchor_id, anchor_hash)
    ):
        return ChainReport(
            count,
            first_id,
            expected_id - 1 or None,
            prev_hash,
            first_id or anchor_id + 1,
            f"records up to {anchor_id} were removed, but no retention record says so (the chain's "
            "anchor was changed?)",
        )
    return ChainReport(count, first_id, expected_id - 1 or None, prev_hash)


def _statements(script: str) -> Iterator[str]:
    """The statements of a script, split where a statement is complete (trigger bodies hold ';')."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending.strip()
            pending = ""

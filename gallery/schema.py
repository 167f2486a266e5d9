"""The SQLite schema (the source of truth) and its migrations.

WAL mode lets searches and listings read while one writer commits. secure_delete=ON overwrites what a
delete frees (cells, overflow and freelist pages) with zeros, so an erased embedding or picture is not
left in the file's free space; the store checkpoints the WAL after each erasure (its old frames hold
the rows too). synchronous=FULL fsyncs the WAL at
every commit: an enrolment that returned survives kill -9 (NORMAL would too) and also a power cut
(NORMAL would not), for one fsync per enrolment call, which is small next to computing the embedding.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Literal

from gallery.errors import GalleryError

logger = logging.getLogger(__name__)

Synchronous = Literal["FULL", "NORMAL"]
BUSY_TIMEOUT_MS = 30_000

# Each entry migrates from version i to i + 1; never edit a released entry, append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE galleries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: names index snapshots across re-creation
        name TEXT NOT NULL UNIQUE,
        model_hash TEXT NOT NULL,
        dim INTEGER NOT NULL,
        parts INTEGER NOT NULL,
        created REAL NOT NULL,
        settings TEXT,                         -- the creator's metadata, JSON
        version INTEGER NOT NULL DEFAULT 0     -- bumped by triggers on every sequence change
    );
    CREATE TABLE subjects (
        gallery_id INTEGER NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
        subject_id TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (gallery_id, subject_id)
    ) WITHOUT ROWID;
    CREATE TABLE sequences (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the FAISS id
        gallery_id INTEGER NOT NULL,
        uid TEXT NOT NULL,                     -- the public sequence id
        subject_id TEXT NOT NULL,
        model_hash TEXT NOT NULL,
        metadata TEXT,
        embedding BLOB NOT NULL,               -- float32 little-endian, per-part L2-normalised
        created REAL NOT NULL,
        UNIQUE (gallery_id, uid),
        FOREIGN KEY (gallery_id, subject_id) REFERENCES subjects(gallery_id, subject_id) ON DELETE CASCADE
    );
    CREATE INDEX sequences_by_subject ON sequences (gallery_id, subject_id);
    CREATE TRIGGER sequences_insert AFTER INSERT ON sequences
        BEGIN UPDATE galleries SET version = version + 1 WHERE id = NEW.gallery_id; END;
    CREATE TRIGGER sequences_delete AFTER DELETE ON sequences
        BEGIN UPDATE galleries SET version = version + 1 WHERE id = OLD.gallery_id; END;
    CREATE TRIGGER sequences_update AFTER UPDATE ON sequences
        BEGIN UPDATE galleries SET version = version + 1 WHERE id = NEW.gallery_id; END;
    """,
    """
    CREATE TABLE write_probe (data BLOB);     -- a trial write after the disk was full (store.check)
    """,
    """
    ALTER TABLE galleries ADD COLUMN retention_days INTEGER;  -- NULL: sequences are kept until deleted
    ALTER TABLE galleries ADD COLUMN store_pictures INTEGER NOT NULL DEFAULT 1;
    -- the retention sweep finds expired sequences in the index every enrolment writes anyway (no extra
    -- page per insert), never in the rows (created lies after the embedding's overflow pages)
    DROP INDEX sequences_by_subject;
    CREATE INDEX sequences_by_subject ON sequences (gallery_id, subject_id, created);
    CREATE TABLE erasures (                   -- what was erased, to apply to old exports (docs/privacy.md)
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        gallery TEXT NOT NULL,
        action TEXT NOT NULL,                  -- delete_subject, delete_sequence, delete_gallery, expire
        subject_id TEXT,
        sequence_ids TEXT NOT NULL             -- JSON list; empty for a gallery: all it held
    );
    CREATE INDEX erasures_by_time ON erasures (time);
    """,
    """
    CREATE TABLE encryption (key_id TEXT NOT NULL);  -- one row in an encrypted store: its master key's id
    CREATE TABLE gallery_keys (                      -- each gallery's data key, wrapped by the master key
        gallery_id INTEGER PRIMARY KEY REFERENCES galleries(id) ON DELETE CASCADE,
        wrapped BLOB NOT NULL
    );
    """,
)


def connect(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), shareable across threads under a lock."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to the latest version in one transaction; returns that version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        current = row[0] if row else 0
        if current > len(MIGRATIONS):
            raise GalleryError(
                f"the gallery database is at schema version {current}, newer than this gaitlu "
                f"understands ({len(MIGRATIONS)}): upgrade gaitlu"
            )
        for version in range(current, len(MIGRATIONS)):
            logger.info("migrating gallery schema %d -> %d", version, version + 1)
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (len(MIGRATIONS),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction midway)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return [s for s in statements if s]

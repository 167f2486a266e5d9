"""Encryption at rest for the local store: a master key from settings, a data key per gallery.

Envelope encryption: the master key (KEK, 32 bytes from GAITLU_ENCRYPTION_KEY or a key file) only wraps
the galleries' data keys (DEKs, 32 random bytes each, stored wrapped in SQLite's `gallery_keys`), and the
data keys encrypt what identifies a person: every embedding blob, every picture (the GEI stored in a
sequence's metadata under `GEI_KEY`) and the index snapshots written beside the database. All of it is
AES-256-GCM with a random 96-bit nonce per value and associated data that names the gallery, the kind of
value and the sequence, so a ciphertext copied onto another row (or gallery) fails to open as surely as
an edited one. Rotating the master key re-wraps the data keys in one transaction (cheap: no data is
rewritten); new data keys re-encrypt every value in that same transaction. Deleting a gallery deletes its
data key with it.

What stays plaintext: the in-memory FAISS index (it must search), ids, the caller's metadata other than
the picture (filters read it), counts and times. The store records the master key's id (a hash, never
the key) so that a missing or wrong key is a clear error at start, before anything is read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import sqlite3
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gallery.errors import EncryptionKeyError, TamperedDataError
from gallery.previews import GEI_KEY

KEY_ENV = "GAITLU_ENCRYPTION_KEY"  # the master key, base64 of 32 bytes
KEY_FILE_ENV = "GAITLU_ENCRYPTION_KEY_FILE"  # or a file that holds it (no access for group or others)
NEW_KEY_ENV = "GAITLU_NEW_ENCRYPTION_KEY"  # `gaitlu galleries rotate-key`: the key to rotate to
NEW_KEY_FILE_ENV = "GAITLU_NEW_ENCRYPTION_KEY_FILE"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's 96-bit nonce, random per value (2^32 values per key keep collisions negligible)
TAG_BYTES = 16
SNAPSHOT_CHUNK = 16 * 1024 * 1024  # snapshot parts are sealed in chunks (one GCM call takes < 2 GiB)
PICTURE_PREFIX = "aes-gcm:"  # a sealed picture in the metadata JSON: prefix + base64(nonce + ciphertext)


def new_key() -> str:
    """A fresh master key as the settings take it (`gaitlu galleries new-key`)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def parse_key(text: str, setting: str) -> bytes:
    """base64 of 32 bytes -> the key; anything else is an EncryptionKeyError naming `setting`."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise EncryptionKeyError(
            f"{setting} must be the base64 of {KEY_BYTES} random bytes "
            "(make one with `gaitlu galleries new-key`)"
        )
    return key


def read_key_file(path: Path, setting: str) -> bytes:
    """The key in `path`, refused when group or others may read or write it (as ssh refuses a key)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise EncryptionKeyError(f"{setting}: cannot read the key file {path} ({exc})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise EncryptionKeyError(
            f"{setting}: the key file {path} is accessible to group or others (mode {stat.S_IMODE(mode):o}); "
            f"chmod 600 {path}"
        )
    return parse_key(text, f"{setting} ({path})")


def master_key(
    key: str | None, key_file: Path | None, names: tuple[str, str] = (KEY_ENV, KEY_FILE_ENV)
) -> bytes | None:
    """The master key from its text or its file (never both); None: the store is not encrypted."""
    if key and key_file is not None:
        raise EncryptionKeyError(f"set {names[0]} or {names[1]}, not both")
    if key_file is not None:
        return read_key_file(key_file, names[1])
    return parse_key(key, names[0]) if key else None


def master_key_from_env(new: bool = False) -> bytes | None:
    """The master key the offline commands use, from the same variables as the service (or the NEW_
    ones: the key `rotate-key` rotates to)."""
    names = (NEW_KEY_ENV, NEW_KEY_FILE_ENV) if new else (KEY_ENV, KEY_FILE_ENV)
    file = os.environ.get(names[1])
    return master_key(os.environ.get(names[0]), Path(file) if file else None, names)


def key_id(key: bytes) -> str:
    """The id a key is recorded under: a short domain-separated hash, never the key."""
    return "key-" + hashlib.sha256(b"gaitlu-encryption-key\0" + key).hexdigest()[:16]


def _associated(gallery_id: int, kind: str, name: str) -> bytes:
    """What binds a ciphertext to its place: gallery, kind of value and sequence (or snapshot part)."""
    return f"gaitlu/{gallery_id}/{kind}/{name}".encode()


def _seal(aead: AESGCM, data: bytes | memoryview, ad: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, data, ad)


def _open(aead: AESGCM, blob: bytes | memoryview, ad: bytes, what: str) -> bytes:
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise TamperedDataError(f"{what} is too short to be a sealed value: the stored data was altered")
    try:
        return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], ad)
    except InvalidTag:
        raise TamperedDataError(
            f"{what} fails authentication: the stored data was altered, moved or written under another key"
        ) from None


class AtRest(Protocol):
    """How the store keeps values on disk: as they are (`Plaintext`) or sealed (`Keyring`)."""

    def add_gallery(self, conn: sqlite3.Connection, gallery_id: int) -> None: ...
    def seal_embedding(self, gallery_id: int, uid: str, data: bytes) -> bytes: ...
    def open_embedding(self, gallery_id: int, uid: str, blob: bytes) -> bytes: ...
    def seal_metadata(self, gallery_id: int, uid: str, text: str | None) -> str | None: ...
    def open_metadata(self, gallery_id: int, uid: str, text: str | None) -> str | None: ...
    def seal_snapshot(self, gallery_id: int, part: str, data: bytes) -> bytes: ...
    def open_snapshot(self, gallery_id: int, part: str, data: memoryview) -> bytes | memoryview: ...
    def tag(self, gallery_id: int) -> dict[str, str]: ...


class Plaintext:
    """The store without a master key: values are written as they are (the default)."""

    def add_gallery(self, conn: sqlite3.Connection, gallery_id: int) -> None:
        pass

    def seal_embedding(self, gallery_id: int, uid: str, data: bytes) -> bytes:
        return data

    open_embedding = seal_embedding

    def seal_metadata(self, gallery_id: int, uid: str, text: str | None) -> str | None:
        return text

    open_metadata = seal_metadata

    def seal_snapshot(self, gallery_id: int, part: str, data: bytes) -> bytes:
        return data

    def open_snapshot(self, gallery_id: int, part: str, data: memoryview) -> bytes | memoryview:
        return data

    def tag(self, gallery_id: int) -> dict[str, str]:
        return {}


class Keyring:
    """The master key and every gallery's data key (unwrapped at open, kept for the store's life)."""

    def __init__(self, master: bytes, wrapped: Mapping[int, bytes]) -> None:
        self._master = AESGCM(master)
        self.key_id = key_id(master)
        self._data_keys = {g: self._unwrap(g, blob) for g, blob in wrapped.items()}
        self._aeads = {g: AESGCM(key) for g, key in self._data_keys.items()}

    def _wrap(self, gallery_id: int, data_key: bytes) -> bytes:
        return _seal(self._master, data_key, _associated(gallery_id, "data-key", ""))

    def _unwrap(self, gallery_id: int, blob: bytes) -> bytes:
        return _open(
            self._master, blob, _associated(gallery_id, "data-key", ""), f"gallery {gallery_id}'s data key"
        )

    def _remember(self, gallery_id: int, data_key: bytes) -> None:
        self._data_keys[gallery_id] = data_key
        self._aeads[gallery_id] = AESGCM(data_key)

    def add_gallery(self, conn: sqlite3.Connection, gallery_id: int) -> None:
        """A new data key for a new gallery, stored wrapped in the caller's transaction."""
        data_key = secrets.token_bytes(KEY_BYTES)
        conn.execute(
            "INSERT INTO gallery_keys (gallery_id, wrapped) VALUES (?, ?)",
            (gallery_id, self._wrap(gallery_id, data_key)),
        )
        self._remember(gallery_id, data_key)

    def seal_embedding(self, gallery_id: int, uid: str, data: bytes) -> bytes:
        return _seal(self._aeads[gallery_id], data, _associated(gallery_id, "embedding", uid))

    def open_embedding(self, gallery_id: int, uid: str, blob: bytes) -> bytes:
        ad = _associated(gallery_id, "embedding", uid)
        return _open(self._aeads[gallery_id], blob, ad, f"the embedding of sequence '{uid}'")

    def seal_metadata(self, gallery_id: int, uid: str, text: str | None) -> str | None:
        """Metadata JSON with its picture sealed (the rest stays readable: filters select on it)."""
        metadata = None if text is None else json.loads(text)
        if not isinstance(metadata, dict) or not isinstance(metadata.get(GEI_KEY), str):
            return text
        sealed = _seal(
            self._aeads[gallery_id], metadata[GEI_KEY].encode(), _associated(gallery_id, "picture", uid)
        )
        metadata[GEI_KEY] = PICTURE_PREFIX + base64.b64encode(sealed).decode("ascii")
        return json.dumps(metadata, separators=(",", ":"))

    def open_metadata(self, gallery_id: int, uid: str, text: str | None) -> str | None:
        metadata = None if text is None else json.loads(text)
        if not isinstance(metadata, dict) or metadata.get(GEI_KEY) is None:
            return text
        value = metadata[GEI_KEY]
        if not isinstance(value, str) or not value.startswith(PICTURE_PREFIX):
            raise TamperedDataError(
                f"the picture of sequence '{uid}' is stored unsealed in an encrypted store"
            )
        ad = _associated(gallery_id, "picture", uid)
        sealed = base64.b64decode(value.removeprefix(PICTURE_PREFIX))
        metadata[GEI_KEY] = _open(
            self._aeads[gallery_id], sealed, ad, f"the picture of sequence '{uid}'"
        ).decode()
        return json.dumps(metadata, separators=(",", ":"))

    def seal_snapshot(self, gallery_id: int, part: str, data: bytes) -> bytes:
        """A snapshot part sealed in chunks, each bound to its part, position and whether it is last."""
        aead, view = self._aeads[gallery_id], memoryview(data)
        starts = range(0, max(len(data), 1), SNAPSHOT_CHUNK)
        return b"".join(
            _seal(aead, view[s : s + SNAPSHOT_CHUNK], _chunk_ad(gallery_id, part, i, i == len(starts) - 1))
            for i, s in enumerate(starts)
        )

    def open_snapshot(self, gallery_id: int, part: str, data: memoryview) -> bytes:
        aead, step = self._aeads[gallery_id], SNAPSHOT_CHUNK + NONCE_BYTES + TAG_BYTES
        starts = range(0, max(len(data), 1), step)
        what = f"index snapshot part '{part}' of gallery {gallery_id}"
        return b"".join(
            _open(aead, data[s : s + step], _chunk_ad(gallery_id, part, i, i == len(starts) - 1), what)
            for i, s in enumerate(starts)
        )

    def tag(self, gallery_id: int) -> dict[str, str]:
        """A snapshot's record of the data key that sealed it (a hash): new data keys make it stale."""
        digest = hashlib.sha256(b"gaitlu-data-key\0" + self._data_keys[gallery_id]).hexdigest()[:16]
        return {"data_key": digest}

    def rotate(self, conn: sqlite3.Connection, master: bytes, new_data_keys: bool) -> Keyring:
        """Re-wrap every data key under `master` (and, with `new_data_keys`, re-encrypt every embedding
        and picture under fresh ones) inside the caller's transaction; returns the new keyring."""
        rotated = Keyring(master, {})
        for gallery_id, data_key in self._data_keys.items():
            if not conn.execute("SELECT 1 FROM galleries WHERE id = ?", (gallery_id,)).fetchone():
                continue  # deleted while open: its key went with it
            rotated._remember(gallery_id, secrets.token_bytes(KEY_BYTES) if new_data_keys else data_key)
            conn.execute(
                "UPDATE gallery_keys SET wrapped = ? WHERE gallery_id = ?",
                (rotated._wrap(gallery_id, rotated._data_keys[gallery_id]), gallery_id),
            )
            if new_data_keys:
                rows = conn.execute(
                    "SELECT id, uid, embedding, metadata FROM sequences WHERE gallery_id = ?", (gallery_id,)
                ).fetchall()
                for row_id, uid, blob, text in rows:
                    embedding = rotated.seal_embedding(
                        gallery_id, uid, self.open_embedding(gallery_id, uid, blob)
                    )
                    metadata = rotated.seal_metadata(
                        gallery_id, uid, self.open_metadata(gallery_id, uid, text)
                    )
                    conn.execute(
                        "UPDATE sequences SET embedding = ?, metadata = ? WHERE id = ?",
                        (embedding, metadata, row_id),
                    )
        conn.execute("UPDATE encryption SET key_id = ?", (rotated.key_id,))
        return rotated


def _chunk_ad(gallery_id: int, part: str, index: int, last: bool) -> bytes:
    return _associated(gallery_id, "snapshot", f"{part}/{index}/{'last' if last else 'more'}")


def open_at_rest(conn: sqlite3.Connection, path: Path, master: bytes | None) -> AtRest:
    """How the store at `path` keeps values, checked against the master key given (in a transaction of
    the caller's). Refuses, naming the setting: an encrypted store without the key or with another, and
    a store of plaintext galleries with a key (encryption starts with a new data folder; docs/privacy.md).
    An empty store given a key becomes encrypted."""
    row = conn.execute("SELECT key_id FROM encryption").fetchone()
    if row is None and master is None:
        return Plaintext()
    if row is None:
        assert master is not None
        galleries = conn.execute("SELECT count(*) FROM galleries").fetchone()[0]
        if galleries:
            raise EncryptionKeyError(
                f"the gallery database {path} holds {galleries} unencrypted galleries, and {KEY_ENV} is set: "
                "encryption at rest starts with a new data folder; export the galleries without the key "
                "(`gaitlu galleries export`), then import them into a new data folder with it "
                "(docs/privacy.md)"
            )
        conn.execute("INSERT INTO encryption (key_id) VALUES (?)", (key_id(master),))
        return Keyring(master, {})
    if master is None:
        raise EncryptionKeyError(
            f"the gallery database {path} is encrypted: set {KEY_ENV} (or {KEY_FILE_ENV}) to its master key "
            f"(id {row[0]})"
        )
    if key_id(master) != row[0]:
        raise EncryptionKeyError(
            f"{KEY_ENV} is not the master key of the gallery database {path}: the key given has id "
            f"{key_id(master)}, the database was encrypted with {row[0]} (a rotated key? use the new one)"
        )
    wrapped = dict(conn.execute("SELECT gallery_id, wrapped FROM gallery_keys").fetchall())
    return Keyring(master, wrapped)

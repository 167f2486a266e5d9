"""Encryption at rest, so that a copied disk or backup does not give the biometric data away, through HTTP,
the CLI and the store: with a master key no embedding or picture is in the data folder's bytes, answers are
those of a plaintext store, a missing or wrong key stops the start with a message naming the setting, rotation
moves everything to the new key (and away from the old one, all or nothing), and an altered ciphertext is an
error, never an answer."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gaitlu.embedding import EmbeddingLayout
from gaitlu.pictures import PNG_PREFIX
from gallery import crypto
from gallery.crypto import Keyring, master_key
from gallery.errors import EncryptionKeyError, TamperedDataError
from gallery.store import LocalStore
from gallery.stores import MilvusSettings, open_gallery_store
from tests.support.cli import gaitlu_argv, run_cli
from tests.support.embeddings import unit_embeddings
from tests.support.servers import client, npy_bytes
from tests.support.walkers import walking_sequence

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.b64encode(bytes(range(100, 132))).decode()
SUBJECTS, WALKS = 3, 2
MODEL = "ab" * 32
LAYOUT = EmbeddingLayout(parts=4, part_dim=16)


def enrol(api) -> None:
    assert api.post("/galleries", json={"name": "people"}).status_code == 201
    for s in range(SUBJECTS):
        files = [
            ("files", (f"s{s}-{w}.npy", npy_bytes(walking_sequence(10 * s + w, 12)))) for w in range(WALKS)
        ]
        ids = {"sequence_ids": [f"s{s}-{w}" for w in range(WALKS)]}
        response = api.post(f"/galleries/people/subjects/s{s}/sequences", files=files, data=ids)
        assert response.status_code == 201, response.text


def start(artifact: Path, folder: Path, **values: object) -> None:
    """Start the service's app on `folder` (its lifespan: model, store) and stop it."""
    with client(artifact, folder, **values):
        pass


def answers(api) -> list:
    """Every probe's search hits and a verify verdict: what must not change with encryption."""
    found = []
    for s in range(SUBJECTS):
        probe = ("files", ("probe.npy", npy_bytes(walking_sequence(10 * s + 7, 12))))
        hits = api.post("/search", files=[probe], data={"gallery": "people", "k": "3"}).json()["data"][0][
            "data"
        ]
        found.append([(h["subject_id"], h["sequence_id"], round(h["score"], 5)) for h in hits])
        verdict = api.post(
            "/verify", files=[probe], data={"gallery": "people", "subject_id": f"s{s}", "threshold": "0.5"}
        ).json()
        found.append((verdict["sequence_id"], round(verdict["score"], 5), verdict["match"]))
    return found


def needles(api, sequence_id: str = "s1-0") -> dict[str, list[bytes]]:
    """What must not be found: 32-byte windows of a stored embedding's float32 bytes, of its picture's
    PNG bytes and of the picture's base64 text (as the metadata JSON would hold it)."""
    vector = api.get(f"/galleries/people/sequences/{sequence_id}/embedding").json()["embedding"]
    uri = api.get(f"/galleries/people/sequences/{sequence_id}").json()["gei_png"]
    assert uri.startswith(PNG_PREFIX)
    text = uri.removeprefix(PNG_PREFIX).encode()
    return {
        "embedding": windows(np.asarray(vector, "<f4").tobytes()),
        "picture": windows(base64.b64decode(text)) + windows(text),
    }


def stored_embeddings(folder: Path) -> dict[str, bytes]:
    """Each sequence's embedding blob as the database holds it."""
    db = sqlite3.connect(folder / "galleries.db")
    try:
        return dict(db.execute("SELECT uid, embedding FROM sequences").fetchall())
    finally:
        db.close()


def windows(data: bytes, width: int = 32) -> list[bytes]:
    return [data[i : i + width] for i in range(0, len(data) - width + 1, width)]


def found_in(folder: Path, sought: dict[str, list[bytes]]) -> set[str]:
    """Which kinds of `sought` any byte of any file under `folder` holds (WAL, snapshots, audit, all)."""
    found = set()
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found |= {kind for kind, parts in sought.items() if any(part in data for part in parts)}
    return found


@pytest.mark.parametrize("encrypted", [False, True])
def test_with_a_key_no_embedding_or_picture_is_in_the_data_folder(tiny_artifact, tmp_path, encrypted):
    with client(tiny_artifact, tmp_path, **({"encryption_key": KEY} if encrypted else {})) as api:
        enrol(api)
        sought = needles(api)
        while_running = found_in(tmp_path, sought)
    after_close = found_in(tmp_path, sought)  # index snapshots are written at close
    assert list(tmp_path.glob("*.indexes/*.faiss")), "the snapshots were scanned too"
    if encrypted:
        assert while_running == after_close == set()
    else:  # the same scan finds both in a plaintext folder: it can fail
        assert while_running == after_close == {"embedding", "picture"}


@pytest.fixture(scope="module")
def plaintext_answers(tiny_artifact, tmp_path_factory) -> list:
    with client(tiny_artifact, tmp_path_factory.mktemp("plain")) as api:
        enrol(api)
        return answers(api)


def test_search_and_verify_answer_as_without_encryption_also_from_the_snapshot(
    tiny_artifact, tmp_path, plaintext_answers
):
    with client(tiny_artifact, tmp_path, encryption_key=KEY) as api:
        enrol(api)
        assert answers(api) == plaintext_answers
        picture = api.get("/galleries/people/sequences/s0-1").json()["gei_png"]
    with client(tiny_artifact, tmp_path, encryption_key=KEY) as api:  # from the encrypted snapshot
        assert answers(api) == plaintext_answers
        assert api.get("/galleries/people/sequences/s0-1").json()["gei_png"] == picture


def test_the_encrypted_snapshot_is_read_back_and_a_damaged_one_is_rebuilt(tmp_path):
    key = crypto.parse_key(KEY, "key")
    vectors = unit_embeddings(np.random.default_rng(3), 40, LAYOUT)
    with LocalStore(tmp_path / "g.db", encryption_key=key) as store:
        store.create_gallery("g", MODEL, LAYOUT)
        store.enroll("g", "p", vectors, MODEL)
        expected = store.search("g", vectors[5], MODEL, k=1)
    with LocalStore(tmp_path / "g.db", encryption_key=key) as store:
        assert store.stats()[0].index_source == "snapshot"
        assert store.search("g", vectors[5], MODEL, k=1) == expected
    [snapshot] = tmp_path.glob("g.db.indexes/*.faiss")
    data = bytearray(snapshot.read_bytes())
    data[-20] ^= 1  # inside the last sealed part
    snapshot.write_bytes(bytes(data))
    with LocalStore(tmp_path / "g.db", encryption_key=key) as store:
        assert store.stats()[0].index_source == "built"  # a cache: rebuilt from SQLite, not trusted
        assert store.search("g", vectors[5], MODEL, k=1) == expected


def test_a_start_without_the_key_or_with_another_names_the_setting(tiny_artifact, tmp_path):
    with client(tiny_artifact, tmp_path, encryption_key=KEY) as api:
        enrol(api)
    with pytest.raises(EncryptionKeyError, match="is encrypted: set GAITLU_ENCRYPTION_KEY"):
        start(tiny_artifact, tmp_path)
    with pytest.raises(EncryptionKeyError, match="GAITLU_ENCRYPTION_KEY is not the master key"):
        start(tiny_artifact, tmp_path, encryption_key=OTHER_KEY)
    with pytest.raises(EncryptionKeyError, match="base64 of 32 random bytes"):
        start(tiny_artifact, tmp_path, encryption_key="not-a-key")
    # `gaitlu serve`: one line naming the setting, exit 2, no traceback, nothing bound
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAITLU_")}
    served = subprocess.run(
        gaitlu_argv("serve", "--artifact", tiny_artifact, "--data-dir", tmp_path, "--port", "0"),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert served.returncode == 2, served.stderr
    assert "error: the gallery database" in served.stderr and "GAITLU_ENCRYPTION_KEY" in served.stderr
    assert "Traceback" not in served.stderr


def test_a_key_file_must_be_private_to_its_owner(tiny_artifact, tmp_path):
    key_file = tmp_path / "master.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o644)
    with pytest.raises(EncryptionKeyError, match=r"accessible to group or others .* chmod 600"):
        master_key(None, key_file)
    key_file.chmod(0o600)
    with client(tiny_artifact, tmp_path / "data", encryption_key_file=key_file) as api:
        enrol(api)
    with client(tiny_artifact, tmp_path / "data", encryption_key=KEY) as api:  # the same key, as text
        assert api.get("/galleries/people").json()["sequence_count"] == SUBJECTS * WALKS
    with pytest.raises(EncryptionKeyError, match="not both"):
        master_key(KEY, key_file)


@pytest.mark.parametrize("new_data_keys", [False, True])
def test_rotate_key_through_the_cli_moves_everything_to_the_new_key(
    tiny_artifact, tmp_path, capsys, monkeypatch, plaintext_answers, new_data_keys
):
    data = tmp_path / "data"
    with client(tiny_artifact, data, encryption_key=KEY) as api:
        enrol(api)
        picture = api.get("/galleries/people/sequences/s2-0").json()["gei_png"]
    before = stored_embeddings(data)
    monkeypatch.setenv("GAITLU_ENCRYPTION_KEY", KEY)
    refused = run_cli(capsys, "galleries", "rotate-key", "--data-dir", data)
    assert refused.code == 2 and "set GAITLU_NEW_ENCRYPTION_KEY" in refused.err
    monkeypatch.setenv("GAITLU_NEW_ENCRYPTION_KEY", OTHER_KEY)
    flags = ["--new-data-keys"] if new_data_keys else []
    rotated = run_cli(capsys, "galleries", "rotate-key", "--data-dir", data, *flags)
    assert rotated.code == 0, rotated.err
    assert crypto.key_id(crypto.parse_key(OTHER_KEY, "key")) in rotated.out
    after = stored_embeddings(data)  # re-wrapping rewrites no value; new data keys rewrite every one
    assert (after == before) if not new_data_keys else not (set(after.values()) & set(before.values()))
    with client(tiny_artifact, data, encryption_key=OTHER_KEY) as api:
        assert answers(api) == plaintext_answers
        assert api.get("/galleries/people/sequences/s2-0").json()["gei_png"] == picture
    with pytest.raises(EncryptionKeyError, match="not the master key"):
        start(tiny_artifact, data, encryption_key=KEY)
    again = run_cli(capsys, "galleries", "rotate-key", "--data-dir", data)  # the old key is gone
    assert again.code == 2 and "not the master key" in again.err


def test_a_rotation_that_stops_midway_leaves_the_store_whole_under_the_old_key(tmp_path, monkeypatch):
    old, new = crypto.parse_key(KEY, "key"), crypto.parse_key(OTHER_KEY, "key")
    vectors = unit_embeddings(np.random.default_rng(1), 6, LAYOUT)
    with LocalStore(tmp_path / "g.db", encryption_key=old) as store:
        store.create_gallery("g", MODEL, LAYOUT)
        store.enroll("g", "p", vectors, MODEL, sequence_ids=[f"q{i}" for i in range(6)])
        sealed = Keyring.seal_embedding
        calls = iter(range(100))

        def crash_on_the_fourth(self, *args):
            if next(calls) == 3:
                raise KeyboardInterrupt  # as a kill would stop it, midway through the rows
            return sealed(self, *args)

        monkeypatch.setattr(Keyring, "seal_embedding", crash_on_the_fourth)
        with pytest.raises(KeyboardInterrupt):
            store.rotate_key(new, new_data_keys=True)
        monkeypatch.undo()
        assert np.allclose(store.get_embedding("g", "q5"), vectors[5], atol=1e-6)
    with pytest.raises(EncryptionKeyError, match="not the master key"):
        LocalStore(tmp_path / "g.db", encryption_key=new)
    with LocalStore(tmp_path / "g.db", encryption_key=old) as store:
        _, stored = store.subject_embeddings("g", "p")
        assert np.allclose(stored, vectors, atol=1e-6)


def test_an_altered_or_moved_ciphertext_is_an_error_not_an_answer(tiny_artifact, tmp_path):
    with client(tiny_artifact, tmp_path, encryption_key=KEY) as api:
        enrol(api)
        db = sqlite3.connect(tmp_path / "galleries.db")
        with db:  # another row's valid ciphertext, moved onto this row
            db.execute(
                "UPDATE sequences SET embedding = (SELECT embedding FROM sequences WHERE uid = 's2-0') "
                "WHERE uid = 's1-0'"
            )
            [text] = db.execute("SELECT metadata FROM sequences WHERE uid = 's0-0'").fetchone()
            token = json.loads(text)["gei_png"]  # "aes-gcm:" + base64: one character of it changed
            edited = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
            db.execute("UPDATE sequences SET metadata = ? WHERE uid = 's0-0'", (text.replace(token, edited),))
        db.close()
        moved = api.get("/galleries/people/sequences/s1-0/embedding")
        assert moved.status_code == 500 and moved.json()["error"]["code"] == "tampered_data"
        assert "sequence 's1-0' fails authentication" in moved.json()["error"]["message"]
        edited = api.get("/galleries/people/sequences/s0-0")
        assert edited.status_code == 500 and edited.json()["error"]["code"] == "tampered_data"
    db = sqlite3.connect(tmp_path / "galleries.db")
    with db:  # one bit of a stored embedding flipped while the service was down
        [blob] = db.execute("SELECT embedding FROM sequences WHERE uid = 's2-1'").fetchone()
        flipped = blob[:20] + bytes([blob[20] ^ 1]) + blob[21:]
        db.execute("UPDATE sequences SET embedding = ? WHERE uid = 's2-1'", (flipped,))
    db.close()
    # the change makes the index snapshot stale: the index is rebuilt from SQLite, which fails loudly
    with pytest.raises(TamperedDataError, match=r"sequence 's\d-\d' fails authentication"):
        start(tiny_artifact, tmp_path, encryption_key=KEY)


def test_a_plaintext_folder_given_a_key_is_refused_and_milvus_refuses_encryption(tmp_path):
    key = crypto.parse_key(KEY, "key")
    with LocalStore(tmp_path / "g.db") as store:
        store.create_gallery("g", MODEL, LAYOUT)
    with pytest.raises(EncryptionKeyError, match=r"1 unencrypted galleries.*gaitlu galleries export"):
        LocalStore(tmp_path / "g.db", encryption_key=key)
    with LocalStore(tmp_path / "g.db") as store:  # refused, not half-converted: it opens as it was
        assert [g.name for g in store.list_galleries()] == ["g"]
    with pytest.raises(EncryptionKeyError, match="milvus gallery store cannot encrypt"):
        open_gallery_store("milvus", milvus=MilvusSettings(uri="http://127.0.0.1:9"), encryption_key=key)

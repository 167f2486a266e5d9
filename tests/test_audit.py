"""The audit trail, so that who searched for or changed whose biometric data can be answered afterwards: every
search, verify, enrolment, deletion and gallery change leaves a hash-chained record with the key id, digests
and decisions but never the key or the data; `gaitlu audit verify` names the first tampered record; reviews
need two distinct keys; read-only keys cannot read the trail; retention keeps the chain verifiable; kill -9
loses no acknowledged record."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import get_args

import httpx
import numpy as np
import pytest

from audit import ACTIONS, AUDIT_FILE, AuditStore, Entry, Hit, key_id
from audit.store import REVIEWABLE
from gaitlu.schemas import AuditAction, AuditDecision
from service.auditing import Auditor
from tests.support.cli import run_cli
from tests.support.servers import (
    FULL_KEY,
    READ_KEY,
    ServerProcess,
    client,
    error_code,
    npy_bytes,
    settings_for,
)
from tests.support.walkers import walking_sequence

SECOND_KEY = "second-full-key-0123456789"
KEYS = {"api_keys": f"{FULL_KEY},{SECOND_KEY}", "read_only_keys": READ_KEY}
A = {"X-API-Key": FULL_KEY}
B = {"X-API-Key": SECOND_KEY}
READ = {"X-API-Key": READ_KEY}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def audit_bytes(data_dir: Path) -> bytes:
    """Everything the audit trail keeps on disk: the database, its WAL and shared memory."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob(f"{AUDIT_FILE}*")) if p.is_file())


# ----- through HTTP


@pytest.fixture(scope="module")
def served(tiny_artifact, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("audit-data")
    with client(tiny_artifact, data_dir, **KEYS) as c:
        yield c, data_dir


@pytest.fixture(scope="module")
def story(served):
    """One of each action, by key A: what the later tests read back."""
    api, data_dir = served
    a, b, stranger = walking_sequence(11, 6), walking_sequence(12, 6), walking_sequence(99, 6)
    uploads = {
        "alice-1": npy_bytes(a),
        "alice-2": npy_bytes(b),
        "probe": npy_bytes(a),
        "other": npy_bytes(stranger),
    }
    assert api.post("/galleries", json={"name": "lab"}, headers=A).status_code == 201
    enrolled = api.post(
        "/galleries/lab/subjects/alice/sequences",
        files=[("files", ("a1.npy", uploads["alice-1"])), ("files", ("a2.npy", uploads["alice-2"]))],
        data={"sequence_ids": ["alice-1", "alice-2"]},
        headers=A,
    )
    assert enrolled.status_code == 201, enrolled.text
    embedding = api.get("/galleries/lab/sequences/alice-1/embedding", headers=A).json()["embedding"]
    searched = api.post(
        "/search",
        files=[("files", ("p.npy", uploads["probe"])), ("files", ("o.npy", uploads["other"]))],
        data={"gallery": "lab", "k": "3", "threshold": "0.999"},
        headers=A,
    )
    assert searched.status_code == 200, searched.text
    assert searched.json()["data"][0]["match"]["subject_id"] == "alice"
    by_embedding = api.post(
        "/search", json={"gallery": "lab", "k": 3, "threshold": 0.999, "embeddings": [embedding]}, headers=A
    )
    assert by_embedding.status_code == 200, by_embedding.text
    verified = api.post(
        "/verify",
        files={"files": ("p.npy", uploads["probe"])},
        data={"gallery": "lab", "subject_id": "alice", "threshold": "0.999"},
        headers=A,
    )
    assert verified.status_code == 200 and verified.json()["match"] is True, verified.text
    assert api.delete("/galleries/lab/sequences/alice-2", headers=A).status_code == 204
    assert api.delete("/galleries/lab/subjects/alice", headers=A).status_code == 204
    assert api.post("/galleries", json={"name": "gone"}, headers=A).status_code == 201
    assert api.delete("/galleries/gone", headers=A).status_code == 204
    records = api.get("/audit", headers=A).json()
    audit_ids = [p["audit_id"] for p in searched.json()["data"]]
    audit_ids += [by_embedding.json()["data"][0]["audit_id"], verified.json()["audit_id"]]
    return {
        "uploads": uploads,
        "embedding": embedding,
        "records": records,
        "data_dir": data_dir,
        "audit_ids": audit_ids,
    }


def test_every_action_leaves_a_record_with_the_right_fields(story):
    listing = story["records"]
    actions = [r["action"] for r in listing["data"]]
    assert actions == [
        "create_gallery",
        "enroll",
        "search",  # the sequence probe: a match
        "search",  # the stranger's walk
        "search",  # by embedding
        "verify",
        "delete_sequence",
        "delete_subject",
        "create_gallery",
        "delete_gallery",
    ]
    assert listing["count"] == len(actions)
    records = listing["data"]
    assert {r["key_id"] for r in records} == {key_id(FULL_KEY)}
    assert all(r["request_id"] and len(r["hash"]) == 64 for r in records)
    assert [r["id"] for r in records] == list(range(1, len(records) + 1))
    assert all(r["prev_hash"] == p["hash"] for p, r in itertools.pairwise(records))
    uploads = story["uploads"]

    enroll = records[1]
    assert (enroll["gallery"], enroll["subject_id"]) == ("lab", "alice")
    assert enroll["sequence_ids"] == ["alice-1", "alice-2"]
    assert enroll["input_sha256"] == [sha(uploads["alice-1"]), sha(uploads["alice-2"])]

    match, unknown, by_embedding = records[2:5]
    assert story["audit_ids"] == [3, 4, 5, 6]  # each answer names its record, to review it by
    assert match["request_id"] == unknown["request_id"]  # one request, one record per probe
    assert match["input_sha256"] == [sha(uploads["probe"])]
    assert match["decision"] == "match" and match["threshold"] == pytest.approx(0.999)
    [hit] = [h for h in match["hits"] if h["subject_id"] == "alice"]
    assert hit["score"] >= 0.999 and hit["sequence_id"] in ("alice-1", "alice-2") and "far" in hit
    assert match["review"] == {"state": "pending", "required": 2, "confirmed_by": [], "rejected_by": []}
    assert unknown["input_sha256"] == [sha(uploads["other"])]
    assert (unknown["decision"], unknown["hits"]) == ("unknown", [])
    float32 = np.asarray(story["embedding"], np.float32).tobytes()
    assert by_embedding["input_sha256"] == [sha(float32)] and by_embedding["decision"] == "match"

    verify = records[5]
    assert (verify["gallery"], verify["subject_id"], verify["decision"]) == ("lab", "alice", "verified")
    assert verify["hits"][0]["score"] >= 0.999 and verify["input_sha256"] == [sha(uploads["probe"])]
    assert records[6]["sequence_ids"] == ["alice-2"] and records[6]["subject_id"] == "alice"
    assert (records[7]["action"], records[7]["subject_id"]) == ("delete_subject", "alice")
    assert records[9]["gallery"] == "gone"


def test_the_trail_holds_neither_keys_nor_probe_data(story):
    stored = audit_bytes(story["data_dir"])
    assert stored  # the trail is on disk
    for secret in (FULL_KEY, SECOND_KEY, READ_KEY):
        assert secret.encode() not in stored
    float32 = np.asarray(story["embedding"], np.float32).tobytes()
    assert float32[:64] not in stored  # no embedding, not even its first 16 floats
    upload = story["uploads"]["probe"]  # masks: mostly zeros, so take a stretch around the first 255
    start = upload.index(255)
    assert upload[start - 64 : start + 512] not in stored


def test_filters_and_paging(story, served):
    api, _ = served
    records = story["records"]["data"]

    def listed(**params):
        response = api.get("/audit", params=params, headers=A)
        assert response.status_code == 200, response.text
        return response.json()

    alice = listed(subject_id="alice")
    assert {r["action"] for r in alice["data"]} >= {"enroll", "search", "verify", "delete_subject"}
    assert all(r["action"] != "create_gallery" for r in alice["data"])
    searches = listed(action="search")
    assert searches["count"] == 3 and {r["action"] for r in searches["data"]} == {"search"}
    changes = listed(action=["delete_subject", "delete_sequence"])
    assert [r["action"] for r in changes["data"]] == ["delete_sequence", "delete_subject"]
    assert listed(gallery="gone")["count"] == 2
    assert listed(decision="match")["count"] == 2
    page = listed(limit=3, offset=2)
    assert (page["count"], page["offset"], page["limit"]) == (len(records), 2, 3)
    assert [r["id"] for r in page["data"]] == [3, 4, 5]
    assert [r["id"] for r in listed(order="desc", limit=2, action="create_gallery")["data"]] == [9, 1]
    first = datetime.fromisoformat(records[0]["time"])
    assert listed(until=(first - timedelta(seconds=1)).isoformat())["count"] == 0
    assert listed(since=(first - timedelta(seconds=1)).isoformat())["count"] >= len(records)
    assert (
        api.get("/audit", params={"since": "2026-01-01T00:00:00"}, headers=A).status_code == 422
    )  # no offset
    assert error_code(api.get("/audit", params={"action": "dance"}, headers=A), 422) == "validation_error"
    assert api.get("/audit/3", headers=A).json()["id"] == 3
    assert error_code(api.get("/audit/99999", headers=A), 404) == "not_found"


def test_read_only_and_missing_keys_cannot_read_the_trail(served):
    api, _ = served
    assert error_code(api.get("/audit", headers=READ), 403) == "forbidden"
    assert error_code(api.get("/audit/1", headers=READ), 403) == "forbidden"
    assert (
        error_code(api.post("/audit/1/review", json={"verdict": "confirm"}, headers=READ), 403) == "forbidden"
    )
    assert error_code(api.get("/audit"), 401) == "unauthorized"


def test_a_match_is_confirmed_by_two_distinct_keys_only(story, served):
    api, _ = served
    match = next(r for r in story["records"]["data"] if r["decision"] == "match")
    path = f"/audit/{match['id']}/review"
    first = api.post(path, json={"verdict": "confirm", "note": "gait and build agree"}, headers=A)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["review"]["state"] == "pending" and body["review"]["confirmed_by"] == [key_id(FULL_KEY)]
    assert (body["record"]["action"], body["record"]["target"]) == ("review", match["id"])
    assert body["record"]["verdict"] == "confirm" and body["record"]["key_id"] == key_id(FULL_KEY)

    again = api.post(path, json={"verdict": "confirm"}, headers=A)
    assert error_code(again, 409) == "already_reviewed"
    assert "different keys" in again.json()["error"]["message"]
    assert error_code(api.post(path, json={"verdict": "reject"}, headers=A), 409) == "already_reviewed"

    second = api.post(path, json={"verdict": "confirm"}, headers=B)
    assert second.status_code == 201, second.text
    assert second.json()["review"]["state"] == "confirmed"
    assert second.json()["review"]["confirmed_by"] == [key_id(FULL_KEY), key_id(SECOND_KEY)]
    assert api.get(f"/audit/{match['id']}", headers=A).json()["review"]["state"] == "confirmed"
    reviews = api.get("/audit", params={"action": "review", "subject_id": "alice"}, headers=A).json()
    assert [r["target"] for r in reviews["data"]] == [match["id"], match["id"]]


def test_rejections_and_what_cannot_be_reviewed(story, served):
    api, _ = served
    verify = next(r for r in story["records"]["data"] if r["action"] == "verify")
    rejected = api.post(f"/audit/{verify['id']}/review", json={"verdict": "reject"}, headers=B)
    assert rejected.status_code == 201 and rejected.json()["review"]["state"] == "rejected"
    confirmed_after = api.post(f"/audit/{verify['id']}/review", json={"verdict": "confirm"}, headers=A)
    assert confirmed_after.json()["review"]["state"] == "rejected"  # one rejection stands
    enroll = next(r for r in story["records"]["data"] if r["action"] == "enroll")
    assert error_code(
        api.post(f"/audit/{enroll['id']}/review", json={"verdict": "confirm"}, headers=A), 409
    ) == ("not_reviewable")
    unknown = next(r for r in story["records"]["data"] if r["decision"] == "unknown")
    assert error_code(
        api.post(f"/audit/{unknown['id']}/review", json={"verdict": "confirm"}, headers=A), 409
    ) == ("not_reviewable")
    assert (
        error_code(api.post("/audit/99999/review", json={"verdict": "confirm"}, headers=A), 404)
        == "not_found"
    )
    bad = api.post(f"/audit/{verify['id']}/review", json={"verdict": "maybe"}, headers=A)
    assert error_code(bad, 422) == "validation_error"


def test_cli_verifies_and_exports_the_served_trail(story, served, capsys):
    api, data_dir = served
    checked = run_cli(capsys, "audit", "verify", "--data-dir", data_dir)
    assert checked.code == 0, checked.err
    assert "audit trail intact" in checked.out
    head = api.get("/audit", params={"order": "desc", "limit": 1}, headers=A).json()["data"][0]
    assert head["hash"] in checked.out

    exported = run_cli(capsys, "audit", "export", "--data-dir", data_dir)
    assert exported.code == 0, exported.err
    lines = [json.loads(line) for line in exported.out.splitlines()]
    assert [line["id"] for line in lines] == list(range(1, head["id"] + 1))
    prev = "0" * 64
    for line in lines:  # the export verifies on its own, as its --help says
        body = {k: v for k, v in line.items() if k not in ("prev_hash", "hash")}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        assert line["prev_hash"] == prev and line["hash"] == sha((prev + text).encode())
        prev = line["hash"]


def test_concurrent_requests_share_commits_and_keep_their_records_together(tmp_path):
    settings = settings_for(tmp_path / "no-model-needed", tmp_path, audit_retention_days=0)

    async def record_many() -> list:
        auditor = Auditor(settings)
        await auditor.start()
        try:
            groups = [
                [Entry(action="search", gallery="g", request_id=f"r{i}", input_sha256=(str(i),))] * 2
                for i in range(40)
            ]
            return await asyncio.gather(*(auditor.record(group) for group in groups))
        finally:
            await auditor.stop()

    results = asyncio.run(record_many())
    for i, (first, second) in enumerate(results):  # each request's records: its own, consecutive
        assert first.request_id == second.request_id == f"r{i}" and second.id == first.id + 1
    assert sorted(r.id for pair in results for r in pair) == list(range(1, 81))
    with AuditStore(tmp_path / AUDIT_FILE) as store:
        assert store.verify().ok


def test_the_wire_names_the_same_actions_as_the_store():
    assert set(get_args(AuditAction)) == set(ACTIONS)
    assert {d for _, d in REVIEWABLE} <= set(get_args(AuditDecision))


# ----- tampering, found by `gaitlu audit verify`


def _trail(tmp_path: Path, n: int = 6) -> Path:
    with AuditStore(tmp_path / AUDIT_FILE) as store:
        for i in range(n):
            hit = Hit(f"subject-{i}", f"seq-{i}", 0.9, 1e-4)
            store.append([Entry(action="search", key_id="key-x", gallery="g", hits=(hit,), decision="match")])
    return tmp_path


def _tamper(data_dir: Path, *statements: str) -> None:
    conn = sqlite3.connect(data_dir / AUDIT_FILE)
    conn.execute("DROP TRIGGER records_no_update")
    conn.execute("DROP TRIGGER records_no_delete")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def _verify(capsys, data_dir: Path):
    return run_cli(capsys, "audit", "verify", "--data-dir", data_dir)


def test_an_edited_record_is_named(tmp_path, capsys):
    data_dir = _trail(tmp_path)
    assert _verify(capsys, data_dir).code == 0
    _tamper(data_dir, "UPDATE records SET body = replace(body, 'subject-3', 'mallory') WHERE id = 4")
    result = _verify(capsys, data_dir)
    assert result.code == 1
    assert "broken at record 4" in result.err and "does not match its content" in result.err
    assert "Traceback" not in result.err + result.out


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(tmp_path, capsys):
    data_dir = _trail(tmp_path)
    conn = sqlite3.connect(data_dir / AUDIT_FILE)
    body, prev = conn.execute("SELECT body, prev_hash FROM records WHERE id = 2").fetchone()
    conn.close()
    forged = body.replace("subject-1", "mallory")
    forged_hash = sha((prev + forged).encode())
    _tamper(data_dir, f"UPDATE records SET body = '{forged}', hash = '{forged_hash}' WHERE id = 2")
    result = _verify(capsys, data_dir)
    assert result.code == 1 and "broken at record 3" in result.err and "prev_hash" in result.err


def test_a_deleted_record_and_an_edited_column_are_named(tmp_path, capsys):
    data_dir = _trail(tmp_path)
    _tamper(data_dir, "DELETE FROM records WHERE id = 3")
    result = _verify(capsys, data_dir)
    assert result.code == 1 and "broken at record 4" in result.err and "3 before it are missing" in result.err

    other = _trail(tmp_path / "other")
    _tamper(other, "UPDATE records SET decision = 'unknown' WHERE id = 5")
    result = _verify(capsys, other)
    assert result.code == 1 and "broken at record 5" in result.err and "decision" in result.err


def test_records_cannot_be_changed_by_accident(tmp_path):
    data_dir = _trail(tmp_path)
    conn = sqlite3.connect(data_dir / AUDIT_FILE)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE records SET decision = NULL WHERE id = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM records WHERE id = 1")
    conn.close()


def test_verify_of_a_missing_trail_is_one_clear_line(tmp_path, capsys):
    result = _verify(capsys, tmp_path / "nowhere")
    assert result.code == 2 and result.err.startswith("error: no audit trail at")


# ----- retention


def test_the_retention_sweep_keeps_the_chain_verifiable(tmp_path, capsys):
    data_dir = _trail(tmp_path)
    with AuditStore(data_dir / AUDIT_FILE) as store:
        assert store.sweep(datetime.now(UTC) - timedelta(days=1)) == 0  # nothing that old
        assert store.sweep(datetime.now(UTC) + timedelta(seconds=1)) == 6
        [retention] = list(store.export())
        assert retention.action == "retention" and retention.id == 7
        assert retention.retention is not None and retention.retention["anchor_id"] == 6
        store.append([Entry(action="delete_gallery", gallery="g")])
    result = _verify(capsys, data_dir)
    assert result.code == 0 and "2 records (records 7-8)" in result.out

    # The oldest records removed by hand, without a sweep: found, although the ids left run on.
    other = _trail(tmp_path / "other")
    _tamper(other, "DELETE FROM records WHERE id <= 2")
    result = _verify(capsys, other)
    assert result.code == 1 and "broken at record 3" in result.err
    # ... and with the anchor moved to hide it: no retention record names that anchor.
    conn = sqlite3.connect(other / AUDIT_FILE)
    prev = conn.execute("SELECT prev_hash FROM records WHERE id = 3").fetchone()[0]
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [("anchor_id", "2"), ("anchor_hash", prev)])
    conn.commit()
    conn.close()
    result = _verify(capsys, other)
    assert result.code == 1 and "no retention record" in result.err


def test_the_cli_sweep_and_the_key_id(tmp_path, capsys, monkeypatch):
    data_dir = _trail(tmp_path)
    assert run_cli(capsys, "audit", "sweep", "--data-dir", data_dir, "--days", "1").out.startswith(
        "0 records"
    )
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(FULL_KEY + "\n"))
    shown = run_cli(capsys, "audit", "key-id")
    assert shown.code == 0 and shown.out.strip() == key_id(FULL_KEY) and FULL_KEY not in shown.out


# ----- kill -9


@pytest.mark.slow
def test_kill_9_keeps_every_acknowledged_audit_record(tiny_artifact, tmp_path, capsys):
    data_dir = tmp_path / "data"
    env = {"api_keys": FULL_KEY}
    process = ServerProcess(tiny_artifact, data_dir, tmp_path / "server.log", **env).start()
    acked: list[str] = []
    stop = threading.Event()

    def enroll(worker: int) -> None:
        with httpx.Client(base_url=process.url, headers=A, timeout=30) as c:
            for n in range(10_000):
                if stop.is_set():
                    return
                sequence_id = f"w{worker}-{n}"
                data = npy_bytes(walking_sequence(worker * 10_000 + n, 4))
                try:
                    response = c.post(
                        f"/galleries/g/subjects/s{worker}/sequences",
                        files={"files": ("x.npy", data)},
                        data={"sequence_ids": sequence_id},
                    )
                except httpx.TransportError:  # killed
                    return
                if response.status_code == 201:
                    acked.append(sequence_id)

    try:
        assert httpx.post(f"{process.url}/galleries", json={"name": "g"}, headers=A).status_code == 201
        workers = [threading.Thread(target=enroll, args=(i,)) for i in range(4)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 60
        while len(acked) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.kill()  # SIGKILL with enrolments in flight
        stop.set()
        for worker in workers:
            worker.join(30)
        assert len(acked) >= 30
    finally:
        process.kill()

    checked = run_cli(capsys, "audit", "verify", "--data-dir", data_dir)
    assert checked.code == 0, checked.err
    with AuditStore(data_dir / AUDIT_FILE) as store:
        recorded = {s for r in store.export() if r.action == "enroll" for s in r.sequence_ids}
    assert set(acked) <= recorded  # every 2xx had its record on disk


def test_the_audit_routes_are_in_the_api_schema(served):
    api, _ = served
    schema = api.get("/openapi.json").json()
    assert {"/audit", "/audit/{record_id}", "/audit/{record_id}/review"} <= set(schema["paths"])
    body = schema["paths"]["/audit/{record_id}/review"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].split("/")[-1] in schema["components"]["schemas"]

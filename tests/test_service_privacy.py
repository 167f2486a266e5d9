"""Erasure, retention and minimisation through HTTP and the CLI, since a deleted or expired person must be
gone, not only unindexed: deleting a subject, a sequence or a gallery leaves none of its embeddings or
pictures in the data folder; the erasure log and `gaitlu galleries erase` reach exports made before;
per-gallery `retention_days` and `store_pictures` are validated, changeable, honoured by the sweep and
audited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

from gallery.portable import check_file
from service.retention import sweep_galleries
from tests.support.cli import run_cli
from tests.support.remnants import remnants
from tests.support.servers import FULL_KEY, ServerProcess, client, error_code, npy_bytes
from tests.support.walkers import walking_sequence

A = {"X-API-Key": FULL_KEY}


def enroll(api, gallery: str, subject: str, ids: list[str], seed: int) -> None:
    files = [("files", (f"{i}.npy", npy_bytes(walking_sequence(seed + n, 6)))) for n, i in enumerate(ids)]
    path = f"/galleries/{gallery}/subjects/{subject}/sequences"
    answer = api.post(path, files=files, data={"sequence_ids": ids}, headers=A)
    assert answer.status_code == 201, answer.text


def secrets(api, gallery: str, sequence_id: str) -> list[bytes]:
    """A stored sequence's embedding as float32 bytes and its GEI picture (if any) as stored, past the
    PNG header that every GEI of the model's frame size shares (its first 64 base64 characters)."""
    vector = api.get(f"/galleries/{gallery}/sequences/{sequence_id}/embedding", headers=A).json()["embedding"]
    picture = api.get(f"/galleries/{gallery}/sequences/{sequence_id}", headers=A).json()["gei_png"]
    drawn = [picture.split(",", 1)[1][64:].encode()] if picture else []
    return [np.asarray(vector, "<f4").tobytes(), *drawn]


def test_deletions_through_http_leave_no_embedding_or_picture_in_the_data_folder(tiny_artifact, tmp_path):
    data = tmp_path / "data"
    with client(tiny_artifact, data, api_keys=FULL_KEY) as api:
        assert api.post("/galleries", json={"name": "lab"}, headers=A).status_code == 201
        enroll(api, "lab", "alice", ["a1", "a2"], 1)
        enroll(api, "lab", "bob", ["b1", "b2"], 3)
        enroll(api, "lab", "carol", ["c1"], 5)
        kept = {i: secrets(api, "lab", i) for i in ("a1", "a2", "b1", "b2", "c1")}
    assert all(len(s) == 2 for s in kept.values()), "every sequence has its picture"
    with client(tiny_artifact, data, api_keys=FULL_KEY) as api:  # the index snapshot is on disk now
        assert remnants(data, *kept["a1"], *kept["b1"], *kept["c1"])

        assert api.delete("/galleries/lab/subjects/alice", headers=A).status_code == 204
        assert remnants(data, *kept["a1"], *kept["a2"]) == []
        assert api.delete("/galleries/lab/sequences/b1", headers=A).status_code == 204
        assert remnants(data, *kept["b1"]) == []
        assert remnants(data, *kept["b2"])
        assert api.delete("/galleries/lab", headers=A).status_code == 204
        assert remnants(data, *kept["b2"], *kept["c1"]) == []

        log = api.get("/erasures", params={"gallery": "lab"}, headers=A).json()
        assert [(e["action"], e["subject_id"], e["sequence_ids"]) for e in log["data"]] == [
            ("delete_subject", "alice", ["a1", "a2"]),
            ("delete_sequence", "bob", ["b1"]),
            ("delete_gallery", None, []),
        ]
        audited = api.get("/audit", params={"gallery": "lab"}, headers=A).json()["data"]
        assert [r["action"] for r in audited][-3:] == ["delete_subject", "delete_sequence", "delete_gallery"]
    assert remnants(data, *[s for found in kept.values() for s in found]) == []  # after shutdown too


def test_retention_and_pictures_are_set_validated_changed_and_swept(tiny_artifact, tmp_path):
    with client(tiny_artifact, tmp_path / "data", api_keys=FULL_KEY) as api:
        for body, field in (
            ({"name": "x", "retention_days": 0}, "retention_days"),
            ({"name": "x", "retention_days": "ten"}, "retention_days"),
            ({"name": "x", "retention_days": 36_501}, "retention_days"),
            ({"name": "x", "store_pictures": "no"}, "store_pictures"),
        ):
            answer = api.post("/galleries", json=body, headers=A)
            assert error_code(answer, 422) == "validation_error", answer.text
            assert field in answer.text
        default = api.post("/galleries", json={"name": "plain"}, headers=A).json()
        assert (default["retention_days"], default["store_pictures"]) == (None, True)

        created = api.post(
            "/galleries", json={"name": "short", "retention_days": 30, "store_pictures": False}, headers=A
        )
        assert created.status_code == 201, created.text
        assert (created.json()["retention_days"], created.json()["store_pictures"]) == (30, False)
        enroll(api, "short", "dana", ["d1"], 7)
        assert api.get("/galleries/short/sequences/d1", headers=A).json()["gei_png"] is None

        changed = api.patch("/galleries/short", json={"retention_days": None}, headers=A)
        assert changed.status_code == 200, changed.text
        assert (changed.json()["retention_days"], changed.json()["store_pictures"]) == (None, False)
        assert error_code(api.patch("/galleries/short", json={"retention": 3}, headers=A), 422)
        assert "retention_days" in api.patch("/galleries/short", json={"retention_days": -2}, headers=A).text
        assert error_code(api.patch("/galleries/nope", json={"retention_days": 3}, headers=A), 404)
        assert api.patch("/galleries/short", json={"retention_days": 30}, headers=A).status_code == 200

        engine, auditor = api.app.state.engine, api.app.state.auditor
        now = datetime.now(UTC)
        assert api.portal.call(sweep_galleries, engine, auditor, now + timedelta(days=29)) == []
        (erased,) = api.portal.call(sweep_galleries, engine, auditor, now + timedelta(days=31))
        assert (erased.gallery, erased.sequence_ids) == ("short", ("d1",))
        assert api.get("/galleries/short", headers=A).json()["sequence_count"] == 0
        records = api.get("/audit", params={"action": ["update_gallery", "expire"]}, headers=A).json()["data"]
        assert [(r["action"], r["gallery"], r["sequence_ids"]) for r in records] == [
            ("update_gallery", "short", []),
            ("update_gallery", "short", []),
            ("expire", "short", ["d1"]),
        ]
        log = api.get("/erasures", params={"gallery": "short"}, headers=A).json()["data"]
        assert [(e["action"], e["sequence_ids"]) for e in log] == [("expire", ["d1"])]
        assert api.get("/galleries/plain", headers=A).json()["retention_days"] is None


@contextmanager
def serving(artifact: Path, data: Path) -> Iterator[tuple[tuple[str, ...], httpx.Client]]:
    """`gaitlu serve` in a child process (the CLI's own logging stays apart from a server's in this one):
    the CLI's server options and an HTTP client."""
    server = ServerProcess(artifact, data, data.with_name("serve.log"), api_keys=FULL_KEY).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as api:
            yield ("--server", server.url, "--api-key", FULL_KEY, "--retries", "0"), api
    finally:
        server.stop()


def test_the_cli_sets_policies_and_erases_people_from_old_exports(tiny_artifact, tmp_path, capsys):
    data, export = tmp_path / "data", tmp_path / "lab.tar"
    with serving(tiny_artifact, data) as (at, api):
        made = run_cli(capsys, "galleries", "create", "lab", "--retention-days", "90", *at, "--json")
        assert made.code == 0, made.err
        assert (made.json()["retention_days"], made.json()["store_pictures"]) == (90, True)
        changed = run_cli(capsys, "galleries", "update", "lab", "--no-store-pictures", *at, "--json")
        assert (changed.json()["retention_days"], changed.json()["store_pictures"]) == (90, False)
        kept = run_cli(capsys, "galleries", "update", "lab", "--retention-days", "0", *at, "--json")
        assert kept.json()["retention_days"] is None
        for subject, seed in (("alice", 1), ("bob", 3), ("carol", 5)):
            enroll(api, "lab", subject, [f"{subject}-1", f"{subject}-2"], seed)
        alice = secrets(api, "lab", "alice-1")
    assert run_cli(capsys, "galleries", "export", "lab", "--out", export, "--data-dir", data).code == 0
    log = tmp_path / "erasures.jsonl"
    with serving(tiny_artifact, data) as (at, api):
        assert api.delete("/galleries/lab/subjects/alice", headers=A).status_code == 204
        assert api.delete("/galleries/lab/sequences/bob-2", headers=A).status_code == 204
        saved = run_cli(capsys, "galleries", "erasures", "--out", log, "--gallery", "lab", *at)
        assert saved.code == 0, saved.err
        nothing = run_cli(capsys, "galleries", "update", "lab", *at)
        assert nothing.code == 2 and "nothing to change" in nothing.err
        refused = run_cli(capsys, "galleries", "create", "x", "--retention-days", "-1", *at)
        assert refused.code == 2 and "--retention-days" in refused.err
    assert [json.loads(line)["action"] for line in log.read_text().splitlines()] == [
        "delete_subject",
        "delete_sequence",
    ]
    assert remnants(data, *alice) == []
    assert remnants(tmp_path, *alice) != []  # the old export still holds her...

    erased = run_cli(capsys, "galleries", "erase", export, "--erasures", log, "--json")
    assert erased.code == 0, erased.err
    assert (erased.json()["erased"], erased.json()["sequences"]) == (3, 3)
    assert remnants(tmp_path, *alice) == []  # ...until the erasure log is applied to it
    fewer = tmp_path / "fewer.tar"
    erased = run_cli(capsys, "galleries", "erase", export, "--subjects", "carol", "--out", fewer, "--json")
    assert (erased.json()["erased"], erased.json()["sequences"]) == (2, 1)
    assert check_file(fewer).sequences == 1 and check_file(export).sequences == 3

    for args, message in (
        ((tmp_path / "missing.tar", "--subjects", "carol"), "no such file"),
        ((export,), "nothing to erase"),
        ((export, "--erasures", tmp_path / "missing.jsonl"), "no such file"),
        ((log, "--subjects", "carol"), "gallery export"),
    ):
        result = run_cli(capsys, "galleries", "erase", *args)
        assert result.code == 2 and message in result.err, (args, result.err)
    bad_log = tmp_path / "bad.jsonl"
    bad_log.write_text('{"gallery": "lab", "action": "delete_subject"}\n')
    result = run_cli(capsys, "galleries", "erase", export, "--erasures", bad_log)
    assert result.code == 2 and "line 1: not an erasure" in result.err

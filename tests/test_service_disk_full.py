"""A gallery store without room, through HTTP on a real `gaitlu serve`: a write that finds no
room is 507 `insufficient_storage` naming the cause, with its request id, on a keep-alive connection
that stays usable; `/readyz` says the store takes no writes until room is freed; nothing acknowledged is
lost. Always run with a size limit on the database (`GAITLU_STORE_MAX_BYTES`: SQLite's own "database or
disk is full"); as root, also on a real full disk (a small tmpfs).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tests.support.servers import ServerProcess

KIB = 1024


class Api:
    """One keep-alive connection (http.client: it never reconnects behind our back)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, body: object = None) -> tuple[int, dict[str, str], dict]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.conn.request(method, path, None if body is None else json.dumps(body), headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(data or b"{}")

    def enrol(self, gallery: str, subject: str, sequence_id: str, model: dict, rng: np.random.Generator):
        vector = rng.standard_normal(model["dim"]).astype(np.float32)
        item = {"embedding": vector.tolist(), "sequence_id": sequence_id}
        body = {"model_hash": model["model_hash"], "embeddings": [item]}
        return self.call("POST", f"/galleries/{gallery}/subjects/{subject}/sequences", body)


def fill_until_full(api: Api, model: dict, limit: int = 2000) -> tuple[list[str], dict[str, str], dict]:
    """Enrol one sequence per call into gallery `g` until one is refused: (acknowledged ids, the refusal)."""
    rng = np.random.default_rng(0)
    acknowledged = []
    for i in range(limit):
        status, headers, body = api.enrol("g", f"s{i % 50}", f"q{i}", model, rng)
        if status != 201:
            assert status == 507, body
            return acknowledged, headers, body
        acknowledged.append(f"q{i}")
    raise AssertionError(f"{limit} enrolments and the store never filled up")


def stored_ids(api: Api) -> set[str]:
    found: set[str] = set()
    status, _, page = api.call("GET", "/galleries/g/subjects?limit=1000")
    assert status == 200
    for subject in page["data"]:
        status, _, detail = api.call("GET", f"/galleries/g/subjects/{subject['subject_id']}")
        found |= {s["sequence_id"] for s in detail["data"]}
    return found


def full_then_freed(server: ServerProcess, free: Callable[[Api], None]) -> None:
    """The scenario both tests run: fill, check the refusal and readiness, free room, recover, restart."""
    api = Api(server.port)
    status, _, model = api.call("GET", "/model")
    assert api.call("POST", "/galleries", {"name": "g"})[0] == 201
    acknowledged, headers, body = fill_until_full(api, model)
    assert len(acknowledged) >= 5
    sock = api.conn.sock
    error = body["error"]
    assert error["code"] == "insufficient_storage" and "full" in error["detail"]["cause"], error
    assert "nothing was written" in error["message"]
    assert headers["x-request-id"] == error["request_id"]
    assert headers.get("connection", "").lower() != "close"
    # The same connection goes on (no silent close), reads still work, readiness names the store.
    status, _, ready = api.call("GET", "/readyz")
    assert status == 503 and ready["error"]["code"] == "not_ready", ready
    assert "not writable" in ready["error"]["message"]
    assert api.call("GET", "/galleries/g")[0] == 200
    assert api.conn.sock is sock
    assert stored_ids(api) == set(acknowledged)

    free(api)
    status, _, ready = api.call("GET", "/readyz")
    assert status == 200, ready
    rng = np.random.default_rng(1)
    status, _, _ = api.enrol("g", "after", "after-0", model, rng)
    assert status == 201
    assert api.conn.sock is sock
    api.conn.close()

    server.stop()
    server.start()
    assert stored_ids(Api(server.port)) == {*acknowledged, "after-0"}  # nothing acknowledged was lost


def test_a_store_at_its_size_limit_answers_507_reports_unready_and_loses_nothing(tiny_artifact, tmp_path):
    limit = str(256 * KIB)
    server = ServerProcess(tiny_artifact, tmp_path / "data", tmp_path / "server.log", store_max_bytes=limit)
    server.start()
    try:
        api = Api(server.port)
        model = api.call("GET", "/model")[2]
        assert api.call("POST", "/galleries", {"name": "spare"})[0] == 201
        rng = np.random.default_rng(2)
        for i in range(12):
            assert api.enrol("spare", f"p{i}", f"spare-{i}", model, rng)[0] == 201
        api.conn.close()
        full_then_freed(server, lambda api: _delete_gallery(api, "spare"))  # its pages can be reused
    finally:
        server.stop()


def _delete_gallery(api: Api, name: str) -> None:
    status, _, body = api.call("DELETE", f"/galleries/{name}")
    assert status == 204, body


@contextmanager
def small_tmpfs(where: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of `size_kib` mounted at `where` (root only); skips the test where it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs root to mount a small tmpfs (the size-limit test runs anyway)")
    where.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_real_full_disk_answers_507_reports_unready_and_loses_nothing(tiny_artifact, tmp_path):
    with small_tmpfs(tmp_path / "disk", 2048) as disk:
        data = disk / "data"
        server = ServerProcess(tiny_artifact, data, tmp_path / "server.log").start()
        try:
            ballast = disk / "ballast"  # all the disk's room but ~300 KiB, freed later
            free_kib = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize // KIB
            ballast.write_bytes(b"\0" * max(0, (free_kib - 300) * KIB))
            full_then_freed(server, lambda api: ballast.unlink())
        finally:
            server.stop()

"""The real server (`gaitlu serve` as a child process, uvicorn on 127.0.0.1 and a free port): body limits
at the socket, the CLI's refusal to expose an unauthenticated server, 32 concurrent clients enrolling
and searching, and kill -9 in the middle of enrolments (every acknowledged sequence survives)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import subprocess
import threading
import time
from collections import Counter

import httpx
import pytest

from tests.support.cli import gaitlu_argv
from tests.support.servers import REPO, ServerProcess, npy_bytes
from tests.support.walkers import walking_sequence

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tiny_artifact, tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    process = ServerProcess(tiny_artifact, root / "data", root / "server.log", max_upload_bytes=str(MIB))
    process.start()
    yield process
    process.stop()


def raw_request(port: int, head: bytes, body_chunks: list[bytes]) -> bytes:
    """Send a request by hand (so the body can lie or never end) and return what the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):  # the server answered and closed: expected
                break
        answer = b""
        while data := sock.recv(65536):
            answer += data
            if b"\r\n\r\n" in answer and b'"error"' in answer:
                break
        return answer


def test_oversized_bodies_are_refused_before_being_read(server):
    declared = (
        b"POST /embed HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        b"Content-Length: 10000000000\r\n\r\n"
    )
    answer = raw_request(server.port, declared, [b"x" * 65536])  # 10 GB announced, 64 KB sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]  # answered with the body unread: not a 408
    assert b"payload_too_large" in answer

    chunked = (
        b"POST /embed HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    part = b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.npy"\r\n\r\n'
    pieces = [b"%x\r\n%s\r\n" % (len(data), data) for data in [part] + [b"y" * 65536] * 64]
    answer = raw_request(server.port, chunked, pieces)  # a well-formed upload, no length, 4 MiB streamed
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_cli_refuses_a_public_address_without_keys(tiny_artifact, tmp_path):
    command = gaitlu_argv("serve", "--artifact", tiny_artifact, "--data-dir", tmp_path, "--host", "0.0.0.0")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in result.stderr
    assert "Traceback" not in result.stderr


async def _enroll_loop(
    c: httpx.AsyncClient,
    client_id: int,
    until: float,
    acked: dict[str, str],
    sent: set[str],
    search: bool,
    at_least: int = 0,
) -> Counter[int]:
    """Enrol fresh sequences (and sometimes retry an acknowledged one) until `until`, and on until
    `at_least` were acknowledged (for at most a minute more: a loaded machine is slow); search as we go."""
    statuses: Counter[int] = Counter()
    n = 0
    while time.monotonic() < until or (n < at_least and time.monotonic() < until + 60):
        sequence_id, subject = f"c{client_id}-{n}", f"subject-{client_id % 8}"
        data = npy_bytes(walking_sequence(client_id * 10_000 + n, 4))
        sent.add(sequence_id)
        files = {"files": (f"{sequence_id}.npy", data)}
        response = await c.post(
            f"/galleries/g/subjects/{subject}/sequences", files=files, data={"sequence_ids": sequence_id}
        )
        statuses[response.status_code] += 1
        if response.status_code == 201:
            acked[sequence_id] = subject
            n += 1
            if n % 5 == 0:  # an idempotent retry of what was just stored: must add nothing
                again = await c.post(
                    f"/galleries/g/subjects/{subject}/sequences",
                    files=files,
                    data={"sequence_ids": sequence_id},
                )
                statuses[again.status_code] += 1
        elif response.status_code == 429:
            await asyncio.sleep(0.05)  # then retry the same id
        if search:
            found = await c.post("/search", files={"files": ("q.npy", data)}, data={"gallery": "g", "k": "3"})
            statuses[found.status_code] += 1
    return statuses


@pytest.mark.slow
def test_32_clients_enrol_and_search_without_losing_or_duplicating(server):
    assert httpx.post(f"{server.url}/galleries", json={"name": "g"}).status_code == 201
    acked: dict[str, str] = {}
    sent: set[str] = set()

    async def main() -> Counter[int]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as c:
            until = time.monotonic() + 5
            loops = (_enroll_loop(c, i, until, acked, sent, True, at_least=1) for i in range(32))
            results = await asyncio.gather(*loops)
        return sum(results, Counter())

    statuses = asyncio.run(main())
    assert set(statuses) <= {200, 201, 429}, statuses
    assert {sid.split("-")[0] for sid in acked} == {f"c{i}" for i in range(32)}  # each got through
    gallery = httpx.get(f"{server.url}/galleries/g").json()
    assert gallery["sequence_count"] == len(acked)
    subjects = httpx.get(f"{server.url}/galleries/g/subjects", params={"limit": 100}).json()
    assert subjects["count"] == len(set(acked.values()))
    for subject in subjects["data"]:
        detail = httpx.get(f"{server.url}/galleries/g/subjects/{subject['subject_id']}").json()
        stored = [s["sequence_id"] for s in detail["data"]]
        assert len(stored) == len(set(stored)) == subject["sequence_count"]  # no duplicates
        assert set(stored) == {
            sid for sid, subj in acked.items() if subj == subject["subject_id"]
        }  # none lost
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "gaitlu_batch_size_count" in metrics


@pytest.mark.slow
@pytest.mark.parametrize("at_rest", ["plaintext", "encrypted"])
def test_kill_9_keeps_every_acknowledged_enrolment(tiny_artifact, tmp_path, at_rest):
    key = {"encryption_key": base64.b64encode(bytes(range(32))).decode()} if at_rest == "encrypted" else {}
    process = ServerProcess(tiny_artifact, tmp_path / "data", tmp_path / "server.log", **key).start()
    acked: dict[str, str] = {}
    sent: set[str] = set()
    try:
        assert httpx.post(f"{process.url}/galleries", json={"name": "g"}).status_code == 201

        async def enroll_until_killed() -> None:
            async with httpx.AsyncClient(base_url=process.url, timeout=30) as c:
                until = time.monotonic() + 60  # bounded; the kill ends it long before

                async def guarded(i: int) -> None:
                    with contextlib.suppress(httpx.TransportError):  # the server is gone
                        await _enroll_loop(c, i, until, acked, sent, False)

                await asyncio.gather(*(guarded(i) for i in range(8)))

        loops = threading.Thread(target=asyncio.run, args=(enroll_until_killed(),))
        loops.start()
        deadline = time.monotonic() + 30
        while len(acked) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.kill()  # SIGKILL with enrolments in flight
        loops.join(30)
        assert not loops.is_alive() and len(acked) >= 40
    finally:
        process.kill()

    restarted = ServerProcess(tiny_artifact, tmp_path / "data", tmp_path / "server-2.log", **key).start()
    try:
        url = restarted.url
        gallery = httpx.get(f"{url}/galleries/g").json()
        in_flight = len(sent) - len(acked)
        assert len(acked) <= gallery["sequence_count"] <= len(acked) + in_flight
        stored: dict[str, str] = {}
        for subject in httpx.get(f"{url}/galleries/g/subjects", params={"limit": 100}).json()["data"]:
            detail = httpx.get(f"{url}/galleries/g/subjects/{subject['subject_id']}").json()
            stored.update({s["sequence_id"]: s["subject_id"] for s in detail["data"]})
        assert len(stored) == gallery["sequence_count"]
        assert acked.items() <= stored.items()  # every 2xx survived, under its subject
        assert set(stored) <= sent  # nothing that was never sent
        for sequence_id, subject in stored.items():  # the index agrees with the database: all searchable
            client_id, n = (int(x) for x in sequence_id[1:].split("-"))
            query = npy_bytes(walking_sequence(client_id * 10_000 + n, 4))
            found = httpx.post(
                f"{url}/search", files={"files": ("q.npy", query)}, data={"gallery": "g", "k": "1"}
            )
            [hit] = found.json()["data"][0]["data"]
            assert (hit["subject_id"], hit["sequence_id"]) == (subject, sequence_id)
            assert hit["score"] == pytest.approx(1.0, abs=1e-4)
    finally:
        restarted.stop()

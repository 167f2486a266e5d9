"""Overload: what a busy or stalled part of the server must not do to the rest.

The decode pool answers 429 when it and its wait list are full and 503 at its deadline, and `/readyz`
notices when it is stuck; the readiness check skips the batch queue; `/metrics`, auth and gallery reads
never wait behind locks or a thread pool that stalled work fills; a connection must send its request
head in time. In-process (TestClient) where the app's parts are held on purpose; a real `gaitlu serve`
where the socket matters.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest

import engine.engine as engine_module
from engine.batcher import Batcher
from gaitlu.embedding import Embedder
from gallery.index import GalleryIndex
from gallery.stores import STORE_FILE
from runtime import load_artifact_embedder
from tests.support.servers import FULL_KEY, ServerProcess, client, error_code, gauge, npy_bytes, until
from tests.support.walkers import walking_sequence

WAIT_S = 60.0  # how long a test waits for an answer that must not wait for what the test holds


def upload(seed: int = 0) -> dict:
    return {"files": ("walk.npy", npy_bytes(walking_sequence(seed)))}


@contextmanager
def held(acquire: Callable[[], object], release: Callable[[], object]) -> Iterator[None]:
    """`acquire()` now, `release()` on leaving: held for as long as the test needs, however slow the
    machine, and let go whatever the test fails on."""
    acquire()
    try:
        yield
    finally:
        release()


def answered_while_held(pool: ThreadPoolExecutor, call: Callable[[], httpx.Response], what: str):
    """`call()` answered while the test still holds something: it did not wait for it (had it waited, it
    would have waited until the test let go, after WAIT_S)."""
    try:
        return pool.submit(call).result(timeout=WAIT_S)
    except TimeoutError:
        raise AssertionError(f"{what} waited for what the test holds") from None


# ----- the decode pool


def test_a_full_decode_pool_answers_429_then_503_at_the_deadline_and_readyz_notices(
    tiny_artifact, tmp_path, monkeypatch
) -> None:
    """A decoder that never finishes (no upload within the limits can do this: the deadline is the safety
    net) holds its worker past the deadline; the caller gets 503 with Retry-After while the decoder is
    still stuck, the next upload a 429 (refused, not queued), and the server reports not-ready until the
    worker is free."""
    release, real = threading.Event(), engine_module._decode

    def stalled(item, limits):
        release.wait(WAIT_S)
        return real(item, limits)

    monkeypatch.setattr(engine_module, "_decode", stalled)
    limits = {"decode_workers": 1, "decode_queue": 0, "decode_timeout_s": 1.5}
    with client(tiny_artifact, tmp_path, **limits) as c, ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        first = pool.submit(c.post, "/embed", files=upload())
        until(lambda: gauge(c, "gaitlu_decodes_running") == 1, what="the stalled decode running")
        refused = c.post("/embed", files=upload(1))
        assert error_code(refused, 429) == "overloaded" and "decode workers" in refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        late = first.result(timeout=WAIT_S)
        assert error_code(late, 503) == "decode_timeout" and int(late.headers["Retry-After"]) >= 1
        assert time.monotonic() - started >= 1.5  # at the deadline, not before ...
        assert gauge(c, "gaitlu_decodes_running") == 1  # ... and not when the decoder let go: it has not
        not_ready = c.get("/readyz")
        assert error_code(not_ready, 503) == "not_ready" and "decode workers" in not_ready.text
        release.set()
        until(lambda: gauge(c, "gaitlu_decodes_running") == 0, what="the decode worker free again")
        assert c.get("/readyz").status_code == 200
        assert c.post("/embed", files=upload(2)).status_code == 200


# ----- the readiness check's own lane


class GatedEmbedder:
    """The real runtime behind a gate: once `close()`d, each batch waits for the test to `let_through`
    it, so a long queue stays long for as long as the test looks at it."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.model_hash, self.layout, self.max_frames = inner.model_hash, inner.layout, inner.max_frames
        self._permits = threading.Semaphore(0)
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def let_through(self, batches: int) -> None:
        self._permits.release(batches)

    def open(self) -> None:
        self._closed = False
        self._permits.release(1000)

    def embed(self, sequences: list[np.ndarray]) -> np.ndarray:
        if self._closed and not self._permits.acquire(timeout=WAIT_S):
            raise RuntimeError("the test never let this batch through")
        return self.inner.embed(sequences)


def test_readyz_answers_ready_while_the_batch_queue_is_long(tiny_artifact, tmp_path, monkeypatch) -> None:
    """With one batch in inference and 29 queued, the probe needs two batches to pass (the one running,
    then its own), not the queue's 30."""
    probe_queued, submit = threading.Event(), Batcher.submit

    async def noting_the_probe(self, sequences, *, priority=False):
        if priority:  # the readiness check (set before it joins its lane: this step runs on to its await)
            probe_queued.set()
        return await submit(self, sequences, priority=priority)

    monkeypatch.setattr(Batcher, "submit", noting_the_probe)
    gate = GatedEmbedder(load_artifact_embedder(tiny_artifact))
    with client(tiny_artifact, tmp_path, embedder=gate, max_batch=1) as c, ThreadPoolExecutor(31) as pool:
        gate.close()
        try:
            backlog = [pool.submit(c.post, "/embed", files=upload(i)) for i in range(30)]
            until(lambda: gauge(c, "gaitlu_queue_depth") == 29, what="29 uploads queued behind the first")
            probe_queued.clear()  # the start-up probe's, if it was one
            readiness = pool.submit(c.get, "/readyz")
            assert probe_queued.wait(WAIT_S), "/readyz never asked the batcher"
            gate.let_through(2)  # the batch in inference, then the probe's
            assert readiness.result(timeout=WAIT_S).status_code == 200
            assert gauge(c, "gaitlu_queue_depth") >= 27  # the queue is still there: skipped, not waited for
        finally:
            gate.open()
        assert all(f.result(timeout=WAIT_S).status_code == 200 for f in backlog)


# ----- what must never wait


def test_metrics_never_wait_for_a_gallery_lock(tiny_artifact, tmp_path, monkeypatch) -> None:
    """An enrolment stalled in its index change holds the gallery's lock for writing (what a search
    holds for reading); /metrics answers meanwhile, with the sizes from before the change."""
    in_change, let_go, add = threading.Event(), threading.Event(), GalleryIndex.add

    def stalled_add(self, ids, vectors) -> None:
        in_change.set()
        let_go.wait(WAIT_S)
        add(self, ids, vectors)

    with client(tiny_artifact, tmp_path) as c, ThreadPoolExecutor(2) as pool:
        c.post("/galleries", json={"name": "g"}).raise_for_status()
        c.post("/galleries/g/subjects/s/sequences", files=upload()).raise_for_status()
        monkeypatch.setattr(GalleryIndex, "add", stalled_add)
        enrolling = pool.submit(c.post, "/galleries/g/subjects/t/sequences", files=upload(1))
        try:
            assert in_change.wait(WAIT_S), "the enrolment never reached its index change"
            metrics = answered_while_held(pool, lambda: c.get("/metrics"), "/metrics")
            assert not enrolling.done()  # the change was still held when /metrics answered
        finally:
            let_go.set()
        assert 'gaitlu_gallery_sequences{gallery="g"} 1.0' in metrics.text
        assert enrolling.result(timeout=WAIT_S).status_code == 201


def test_auth_needs_no_thread_when_the_pool_is_full(tiny_artifact, tmp_path) -> None:
    with client(tiny_artifact, tmp_path, api_keys=[FULL_KEY]) as c, ThreadPoolExecutor(1) as pool:
        borrowers: list[object] = []

        async def fill() -> None:  # every token of the pool that sync code and store calls run in
            limiter = anyio.to_thread.current_default_thread_limiter()
            borrowers.extend(object() for _ in range(int(limiter.total_tokens)))
            for borrower in borrowers:
                await limiter.acquire_on_behalf_of(borrower)

        async def empty() -> None:
            limiter = anyio.to_thread.current_default_thread_limiter()
            for borrower in borrowers:
                limiter.release_on_behalf_of(borrower)

        with held(lambda: c.portal.call(fill), lambda: c.portal.call(empty)):
            keyed = answered_while_held(
                pool, lambda: c.get("/metrics", headers={"X-API-Key": FULL_KEY}), "a keyed request"
            )
            assert keyed.status_code == 200
            keyless = answered_while_held(pool, lambda: c.get("/metrics"), "a request without a key")
            assert error_code(keyless, 401) == "unauthorized"


@contextmanager
def write_locked(database: Path) -> Iterator[None]:
    """Another process's write transaction on the gallery database (a backup tool, say): every write of
    the store waits for it, reads go on (WAL)."""
    other = sqlite3.connect(database, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_gallery_writes_stalled_on_the_store_lock_leave_threads_for_reads(tiny_artifact, tmp_path) -> None:
    """50 deletions of stored sequences (more than the 40 threads of the default pool) stall on the
    database while it is locked; reads are answered meanwhile, and each deletion runs once it is free."""
    ids = [f"q{i}" for i in range(50)]
    with client(tiny_artifact, tmp_path) as c, ThreadPoolExecutor(len(ids) + 2) as pool:
        c.post("/galleries", json={"name": "g"}).raise_for_status()
        for chunk in (ids[i : i + 10] for i in range(0, len(ids), 10)):
            files = [("files", (f"{sid}.npy", npy_bytes(walking_sequence(int(sid[1:]))))) for sid in chunk]
            c.post(
                "/galleries/g/subjects/s/sequences", files=files, data={"sequence_ids": chunk}
            ).raise_for_status()
        with write_locked(tmp_path / STORE_FILE):
            deletes = [pool.submit(c.delete, f"/galleries/g/sequences/{sid}") for sid in ids]
            until(
                lambda: gauge(c, "gaitlu_requests_in_flight") == len(ids), what="all 50 deletions in flight"
            )
            gallery = answered_while_held(pool, lambda: c.get("/galleries/g"), "a gallery read")
            subjects = answered_while_held(pool, lambda: c.get("/galleries/g/subjects"), "a subject list")
            assert gallery.status_code == 200 and gallery.json()["sequence_count"] == len(ids)
            assert subjects.status_code == 200
            assert not any(f.done() for f in deletes)  # the deletions were still waiting
        assert all(f.result(timeout=WAIT_S).status_code == 204 for f in deletes)  # each ran once free
        assert c.get("/galleries/g").json()["sequence_count"] == 0


# ----- a real server: request heads, request bodies


@pytest.fixture(scope="module")
def guarded(tiny_artifact, tmp_path_factory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("guarded")
    settings = {"api_keys": FULL_KEY, "body_timeout_s": "3", "header_timeout_s": "1"}
    process = ServerProcess(tiny_artifact, root / "data", root / "server.log", **settings).start()
    yield process
    process.stop()


def bytes_sent_before_closed(sock: socket.socket, trickle: bytes = b"") -> int:
    """How much of `trickle` (sent a byte every 0.2 s) went out before the server closed `sock`; fails if
    the server keeps it open for WAIT_S."""
    sock.settimeout(0.2)
    deadline, sent = time.monotonic() + WAIT_S, 0
    while time.monotonic() < deadline:
        try:
            if sent < len(trickle):
                sock.sendall(trickle[sent : sent + 1])
                sent += 1
            if sock.recv(65536) == b"":
                return sent
        except TimeoutError:
            continue
        except OSError:  # reset: closed too
            return sent
    raise AssertionError(f"the server kept the connection open for {WAIT_S:g} s")


def test_a_request_head_that_does_not_arrive_in_time_closes_the_connection(guarded) -> None:
    """The head must be whole within 1 s: a silent connection is closed, and so is one whose bytes keep
    coming too slowly, before its head (15 s at this pace) is complete."""
    with socket.create_connection(("127.0.0.1", guarded.port)) as silent:
        bytes_sent_before_closed(silent)
    head = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {'x' * 40}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", guarded.port)) as trickling:  # bytes keep coming, too slowly
        assert bytes_sent_before_closed(trickling, head) < len(head)
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as prompt:  # a prompt head
        for _ in range(2):  # is served, and so is the next one on the same connection
            prompt.sendall(head)
            reply = b""
            while not reply.endswith(b'{"status":"ok"}'):
                reply += prompt.recv(65536)
            assert reply.startswith(b"HTTP/1.1 200")


def test_keys_are_checked_before_any_body_is_read(guarded) -> None:
    """A request with a wrong key is answered from its headers: its body is never waited for (FastAPI
    reads a body parameter before the dependencies run, so every route reads its body itself)."""
    paths = httpx.get(f"{guarded.url}/openapi.json", headers={"X-API-Key": FULL_KEY}).json()["paths"]
    with_bodies = [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, operations in paths.items()
        for method, operation in operations.items()
        if "requestBody" in operation
    ]
    assert ("POST", "/galleries") in with_bodies and len(with_bodies) >= 5
    for method, path in with_bodies:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: not-a-key-0123456789\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
        )
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as sock:
            sock.sendall(head.encode())
            reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 401"), (method, path, reply[:100])  # not the 408 after 3 s

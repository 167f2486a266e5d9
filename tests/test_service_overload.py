"""Overload: what a busy or stalled part of the server must not do to the rest.

The decode pool answers 429 when it and its wait list are full and 503 at its deadline, and `/readyz`
notices when it is stuck; the readiness probe skips the batch queue; `/metrics`, auth and gallery reads
never wait behind locks or a thread pool that stalled work fills; a connection must send its request
head in time. In-process (TestClient) where the app's parts are held on purpose; a real `gaitlu serve`
where the socket matters.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import anyio
import httpx
import numpy as np
import pytest

import engine.engine as engine_module
from gaitlu.embedding import Embedder
from runtime import load_artifact_embedder
from tests.support.servers import FULL_KEY, ServerProcess, client, error_code, gauge, npy_bytes, until
from tests.support.walkers import walking_sequence

QUICK_S = 2.0  # what an answer that must not wait may take on a busy 2-core machine
HELD_S = 6.0  # how long the tests hold a lock or a pool: an answer that waited for it takes this long


def upload(seed: int = 0) -> dict:
    return {"files": ("walk.npy", npy_bytes(walking_sequence(seed)))}


@contextmanager
def held_for(seconds: float, acquire, release) -> Iterator[None]:
    """`acquire()` now and `release()` once: after `seconds` (a timer thread, whatever the test is stuck
    in meanwhile) or on leaving, whichever comes first."""
    guard, released = threading.Lock(), False

    def release_once() -> None:
        nonlocal released
        with guard:
            if not released:
                released = True
                release()

    acquire()
    timer = threading.Timer(seconds, release_once)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        release_once()


# ----- the decode pool


def test_a_full_decode_pool_answers_429_then_503_at_the_deadline_and_readyz_notices(
    tiny_artifact, tmp_path, monkeypatch
) -> None:
    """A decoder that never finishes (no upload within the limits can do this: the deadline is the safety
    net) holds its worker past the deadline; the caller gets 503 with Retry-After, the next upload a 429
    at once, and the server reports not-ready until the worker is free."""
    release, real = threading.Event(), engine_module._decode

    def stalled(item, limits):
        release.wait(30)
        return real(item, limits)

    monkeypatch.setattr(engine_module, "_decode", stalled)
    limits = {"decode_workers": 1, "decode_queue": 0, "decode_timeout_s": 1.5}
    with client(tiny_artifact, tmp_path, **limits) as c, ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        first = pool.submit(c.post, "/embed", files=upload())
        until(lambda: gauge(c, "gaitlu_decodes_running") == 1)
        refused = c.post("/embed", files=upload(1))
        assert error_code(refused, 429) == "overloaded" and "decode workers" in refused.text
        assert int(refused.headers["Retry-After"]) >= 1 and time.monotonic() - started < 1.5
        late = first.result()
        assert error_code(late, 503) == "decode_timeout" and int(late.headers["Retry-After"]) >= 1
        assert 1.5 <= time.monotonic() - started < 1.5 + QUICK_S
        not_ready = c.get("/readyz")
        assert error_code(not_ready, 503) == "not_ready" and "decode workers" in not_ready.text
        release.set()
        until(lambda: gauge(c, "gaitlu_decodes_running") == 0)
        assert c.get("/readyz").status_code == 200
        assert c.post("/embed", files=upload(2)).status_code == 200


# ----- the readiness probe's own lane


class SlowEmbedder:
    """The real runtime, 0.2 s slower per call: a busy server without burning the shared CPU."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.model_hash, self.layout, self.max_frames = inner.model_hash, inner.layout, inner.max_frames

    def embed(self, sequences: list[np.ndarray]) -> np.ndarray:
        time.sleep(0.2)
        return self.inner.embed(sequences)


def test_readyz_answers_ready_while_the_batch_queue_is_long(tiny_artifact, tmp_path) -> None:
    slow = SlowEmbedder(load_artifact_embedder(tiny_artifact))
    with client(tiny_artifact, tmp_path, embedder=slow, max_batch=1) as c, ThreadPoolExecutor(30) as pool:
        started = time.monotonic()
        backlog = [pool.submit(c.post, "/embed", files=upload(i)) for i in range(30)]  # ~6 s of batches
        until(lambda: gauge(c, "gaitlu_queue_depth") >= 20)
        probed = time.monotonic()
        assert c.get("/readyz").status_code == 200
        probe_s = time.monotonic() - probed
        assert all(f.result().status_code == 200 for f in backlog)
        backlog_s = time.monotonic() - started
        assert probe_s < backlog_s / 5, (probe_s, backlog_s)  # a batch or two, not the queue


# ----- what must never wait


def test_metrics_never_wait_for_a_gallery_lock(tiny_artifact, tmp_path) -> None:
    with client(tiny_artifact, tmp_path) as c:
        c.post("/galleries", json={"name": "g"}).raise_for_status()
        c.post("/galleries/g/subjects/s/sequences", files=upload()).raise_for_status()
        lock = c.app.state.engine.store._live["g"].lock  # what a search holds, and an index change waits for
        writing = lock.write()
        with held_for(HELD_S, writing.__enter__, lambda: writing.__exit__(None, None, None)):
            started = time.monotonic()
            metrics = c.get("/metrics")
            assert time.monotonic() - started < QUICK_S
        assert 'gaitlu_gallery_sequences{gallery="g"} 1.0' in metrics.text


def test_auth_needs_no_thread_when_the_pool_is_full(tiny_artifact, tmp_path) -> None:
    with client(tiny_artifact, tmp_path, api_keys=[FULL_KEY]) as c:
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

        with held_for(HELD_S, lambda: c.portal.call(fill), lambda: c.portal.call(empty)):
            started = time.monotonic()
            assert c.get("/metrics", headers={"X-API-Key": FULL_KEY}).status_code == 200
            assert error_code(c.get("/metrics"), 401) == "unauthorized"
            assert time.monotonic() - started < QUICK_S


def test_gallery_writes_stalled_on_the_store_lock_leave_threads_for_reads(tiny_artifact, tmp_path) -> None:
    with client(tiny_artifact, tmp_path) as c, ThreadPoolExecutor(50) as pool:
        c.post("/galleries", json={"name": "g"}).raise_for_status()
        store_lock = c.app.state.engine.store._write_lock  # what every write queues on
        with held_for(HELD_S, store_lock.acquire, store_lock.release):
            deletes = [pool.submit(c.delete, f"/galleries/g/sequences/missing-{i}") for i in range(50)]
            time.sleep(0.5)  # all 50 are in: more than the 40 threads of the default pool
            started = time.monotonic()
            assert c.get("/galleries/g").status_code == 200
            assert c.get("/galleries/g/subjects").status_code == 200
            assert time.monotonic() - started < QUICK_S
        assert all(f.result().status_code == 404 for f in deletes)  # each ran once the lock was free


# ----- a real server: request heads, request bodies


@pytest.fixture(scope="module")
def guarded(tiny_artifact, tmp_path_factory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("guarded")
    settings = {"api_keys": FULL_KEY, "body_timeout_s": "3", "header_timeout_s": "1"}
    process = ServerProcess(tiny_artifact, root / "data", root / "server.log", **settings).start()
    yield process
    process.stop()


def closed_after(sock: socket.socket, trickle: bytes = b"") -> float:
    """Seconds until the server closes `sock`, sending `trickle` a byte every 0.2 s meanwhile."""
    started = time.monotonic()
    sock.settimeout(0.2)
    for byte in [trickle[i : i + 1] for i in range(len(trickle))] + [b""] * 50:
        try:
            if byte:
                sock.sendall(byte)
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:  # reset: closed too
            return time.monotonic() - started
    raise AssertionError("the server kept the connection open")


def test_a_request_head_that_does_not_arrive_in_time_closes_the_connection(guarded) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port)) as silent:
        assert closed_after(silent) < 1 + QUICK_S
    head = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {'x' * 40}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", guarded.port)) as trickling:  # bytes keep coming, too slowly
        assert closed_after(trickling, head) < 1 + QUICK_S
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
        started = time.monotonic()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: not-a-key-0123456789\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
        )
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as sock:
            sock.sendall(head.encode())
            reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 401"), (method, path, reply[:100])
        assert time.monotonic() - started < QUICK_S, (method, path)  # not the 408 after 3 s

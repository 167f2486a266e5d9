"""Admission: honest load that can be served within its deadline is taken, never 429; a refusal is only
for load the server cannot serve in time.

32 closed-loop clients are what benchmarks/service.py runs; with the old defaults (4 decode workers and
16 waiting) every 13th of them got 429 while the server had time to spare. Now an upload is refused
only when the wait list is full or its wait would outlast the decode deadline.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import engine.engine as engine_module
from engine.errors import DecodeTimeout, Overloaded
from engine.slots import Slots
from tests.support.servers import client, error_code, gauge, npy_bytes, until
from tests.support.walkers import walking_sequence

CLIENTS = 32


def test_32_simultaneous_honest_uploads_all_get_answers_not_429(tiny_artifact, tmp_path, monkeypatch) -> None:
    """Decodes slowed to 0.1 s so that all 32 overlap: 4 run, 28 wait (the old limit refused 12)."""
    real = engine_module._decode

    def slow(item, limits):
        time.sleep(0.1)
        return real(item, limits)

    monkeypatch.setattr(engine_module, "_decode", slow)
    start = threading.Barrier(CLIENTS)

    def one(c, seed: int):
        start.wait()
        return c.post("/embed", files={"files": ("walk.npy", npy_bytes(walking_sequence(seed, 12)))})

    with client(tiny_artifact, tmp_path) as c, ThreadPoolExecutor(CLIENTS) as pool:
        statuses = [f.result().status_code for f in [pool.submit(one, c, i) for i in range(CLIENTS)]]
    assert statuses == [200] * CLIENTS


def test_an_upload_whose_wait_would_outlast_its_deadline_is_refused_at_once() -> None:
    async def scenario() -> None:
        slots = Slots("decode", 1, 64, 2.0, callers="uploads", late=DecodeTimeout)
        release = threading.Event()
        running = asyncio.ensure_future(slots.run(release.wait, 10))
        while slots.busy == 0:
            await asyncio.sleep(0.01)
        slots._mean_s = 0.6  # as observed: each decode takes 0.6 s
        waiting = asyncio.ensure_future(slots.run(lambda: "second"))  # done in ~1.2 s: within 2 s
        await asyncio.sleep(0.05)
        assert slots.expected_s() == pytest.approx(3 * 0.6)  # a third: two rounds ahead, and its own
        third = asyncio.ensure_future(slots.run(lambda: "third"))  # 1.8 s: still in time
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(Overloaded, match="past its 2 s deadline") as refused:
            await slots.run(lambda: "fourth")  # 2.4 s: it could not finish in time
        assert time.monotonic() - started < 0.5 and refused.value.retry_after_s >= 1
        release.set()
        assert await running and await waiting == "second" and await third == "third"
        slots.close()

    asyncio.run(scenario())


def test_a_full_wait_list_is_still_a_hard_bound(tiny_artifact, tmp_path, monkeypatch) -> None:
    release, real = threading.Event(), engine_module._decode

    def stalled(item, limits):
        release.wait(10)
        return real(item, limits)

    monkeypatch.setattr(engine_module, "_decode", stalled)
    limits = {"decode_workers": 1, "decode_queue": 1}
    with client(tiny_artifact, tmp_path, **limits) as c, ThreadPoolExecutor(2) as pool:
        held = [
            pool.submit(c.post, "/embed", files={"files": ("a.npy", npy_bytes(walking_sequence(i)))})
            for i in (0, 1)
        ]
        until(lambda: gauge(c, "gaitlu_decodes_running") == 1 and gauge(c, "gaitlu_decodes_waiting") == 1)
        refused = c.post("/embed", files={"files": ("c.npy", npy_bytes(walking_sequence(2)))})
        assert error_code(refused, 429) == "overloaded" and "1 uploads wait" in refused.text
        release.set()
        assert [f.result().status_code for f in held] == [200, 200]

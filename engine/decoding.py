"""Decode slots: at most `workers` uploads decoded at once, a short wait list, and a deadline.

Decoding is bounded work (the sequence limits cap its bytes, pixels and frames: ~0.3 s of CPU at most on
one core), but under load it takes seconds, and a thread cannot be stopped. So:
- at most `workers` decodes run, each in a thread of one pool of that size: this bounds decode memory
  and CPU whatever the callers do;
- at most `queue` more wait for a slot, and only while the wait looks short enough to end before the
  deadline (rounds of `workers` x the observed decode time); otherwise the upload is refused at once
  (`Overloaded`, with a Retry-After from that estimate), never queued without bound or queued to time
  out. So honest load that can be served in time is taken (32 closed-loop clients wait, not 429), and
  a flood is refused once its wait would outlast the deadline;
- a caller waits at most `timeout_s` from asking to its result (`DecodeTimeout`). A decode past its
  deadline keeps its slot until its thread ends, so the slots always bound what runs;
- `stuck` says when every slot is held by a decode past its deadline: the pool cannot start new work in
  time, and readiness says so.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from engine.errors import DecodeTimeout, Overloaded

T = TypeVar("T")


class DecodeSlots:
    """Runs blocking decodes in a bounded pool, for callers on one event loop."""

    def __init__(self, workers: int, queue: int, timeout_s: float | None) -> None:
        self.workers = workers
        self.queue = queue
        self.timeout_s = timeout_s  # None: no deadline (a trusted local dataset)
        self._executor: ThreadPoolExecutor | None = None
        self._free = asyncio.Semaphore(workers)  # given back when a thread ends, not when its caller leaves
        self._running: dict[int, float] = {}  # decode -> when its thread started (monotonic)
        self._ids = itertools.count()
        self._waiting = 0
        self._mean_s = 0.05  # running mean of a decode's time, for Retry-After

    @property
    def busy(self) -> int:
        """Decodes running in threads now, those whose callers gave up included."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Uploads waiting for a free decode thread."""
        return self._waiting

    @property
    def stuck(self) -> bool:
        """Every slot is held by a decode that is past its deadline."""
        if self.timeout_s is None or len(self._running) < self.workers:
            return False
        now = time.monotonic()
        return all(now - started > self.timeout_s for started in self._running.values())

    async def run(self, decode: Callable[..., T], *args: object) -> T:
        """`decode(*args)` in a decode thread; Overloaded when every slot and the wait list are taken,
        DecodeTimeout when the result is not there `timeout_s` after the call."""
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout_s is None else loop.time() + self.timeout_s
        if self._free.locked():
            if self._waiting >= self.queue:
                raise Overloaded(
                    self._retry_after(),
                    f"all {self.workers} decode workers are busy and {self._waiting} uploads wait for one",
                )
            expected_s = self.expected_s()
            if self.timeout_s is not None and expected_s > self.timeout_s:
                raise Overloaded(
                    self._retry_after(),
                    f"all {self.workers} decode workers are busy: after the {self._waiting} uploads "
                    f"waiting, this one would be done in about {expected_s:.1f} s, past its "
                    f"{self.timeout_s:g} s deadline",
                )
        free = self._free  # the one this decode gives its slot back to, even after a `close`
        self._waiting += 1
        try:
            async with asyncio.timeout_at(deadline):
                await free.acquire()
        except TimeoutError:
            raise DecodeTimeout(self.timeout_s or 0.0, self._retry_after()) from None
        finally:
            self._waiting -= 1
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="gaitlu-decode")
        key, started = next(self._ids), time.monotonic()
        self._running[key] = started
        future = loop.run_in_executor(self._executor, decode, *args)

        def done(finished: asyncio.Future[T]) -> None:  # on the loop, when the thread is done
            self._running.pop(key, None)
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.monotonic() - started)
            free.release()
            if not finished.cancelled():
                finished.exception()  # retrieved: a caller past its deadline no longer awaits it

        future.add_done_callback(done)
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(future)  # a caller leaving never frees the slot early
        except TimeoutError:
            if future.done():  # the decode's own error, not the deadline
                raise
            raise DecodeTimeout(self.timeout_s or 0.0, self._retry_after()) from None

    def expected_s(self) -> float:
        """When an upload asking now would likely be decoded: the rounds of `workers` decodes ahead of
        it (those running and those waiting) and its own, at the running mean decode time."""
        return (math.ceil((self._waiting + 1) / self.workers) + 1) * self._mean_s

    def _retry_after(self) -> int:
        """Seconds until the decodes ahead have likely run: rounds of `workers` x the mean decode time."""
        return max(1, math.ceil(math.ceil((self._waiting + 1) / self.workers) * self._mean_s))

    def close(self) -> None:
        """Let the threads end without waiting for them; a later `run` (on any loop) starts afresh."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        self._free = asyncio.Semaphore(self.workers)
        self._running.clear()

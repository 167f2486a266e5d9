"""Slots: the engine's one way to run blocking work in threads, with bounds and an honest Retry-After.

Every kind of blocking work the engine does for its callers (decoding uploads, extracting videos,
gallery reads and writes, the batcher's runtime calls) goes through a `Slots` of its own:
- at most `workers` calls run, each in a thread of one pool of that size: this bounds their memory and
  CPU whatever the callers do. A slot is given back when its thread ends, not when its caller leaves
  (a thread cannot be stopped), so the slots always bound what runs;
- at most `queue` more wait for a slot (None: no bound of its own, for work the service's admission
  bounds already). One more is refused at once (`Overloaded`), never queued without bound;
- with a deadline, a call also waits only while its wait looks short enough to end in time (rounds of
  `workers` x the observed call time); otherwise it is refused at once. A caller gets its result
  within `deadline_s` of asking, or the `late` error (the call may go on in its thread, holding its
  slot);
- the Retry-After of a refusal comes from the one running mean of a call's time kept here;
- `stuck` says when every slot is held by a call past its deadline: new work cannot start in time.

Callers are on one event loop; threads come from asyncio's `run_in_executor` on the slots' own pool,
and run in the caller's context (its request id in log lines), as `asyncio.to_thread` does.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from engine.errors import Overloaded

T = TypeVar("T")
Late = Callable[[float, int], Exception]  # (deadline_s, retry_after_s) -> what a caller past it gets
SMOOTHING = 0.2  # weight of the newest call in the running mean of a call's time


class Slots:
    """Bounded threads for one kind of blocking work, for callers on one event loop."""

    def __init__(
        self,
        name: str,
        workers: int,
        queue: int | None,
        deadline_s: float | None = None,
        *,
        mean_s: float = 0.05,
        callers: str = "calls",
        late: Late | None = None,
    ) -> None:
        """`name` says what the workers do in messages and thread names ("decode": "all 4 decode
        workers are busy"), `callers` what waits for them ("uploads"); `mean_s` is the first guess of a
        call's time; `late(deadline_s, retry_after_s)` is the error of a caller past `deadline_s`."""
        if workers < 1:
            raise ValueError(f"{name} slots need at least one worker, got {workers}")
        if deadline_s is not None and late is None:
            raise ValueError(f"{name} slots with a deadline need the error of a caller past it")
        self.name = name
        self.workers = workers
        self.queue = queue
        self.deadline_s = deadline_s  # None: no deadline (a trusted local dataset, or work bounded elsewhere)
        self.callers = callers
        self._late = late
        self._executor: ThreadPoolExecutor | None = None
        self._free = asyncio.Semaphore(workers)  # given back when a thread ends, not when its caller leaves
        self._running: dict[int, float] = {}  # call -> when its thread started (monotonic)
        self._ids = itertools.count()
        self._waiting = 0
        self._mean_s = mean_s  # running mean of a call's time, for Retry-After

    @property
    def busy(self) -> int:
        """Calls running in threads now, those whose callers gave up included."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Callers waiting for a free slot."""
        return self._waiting

    @property
    def mean_s(self) -> float:
        """The running mean of a call's time, in seconds."""
        return self._mean_s

    @property
    def stuck(self) -> bool:
        """Every slot is held by a call that is past its deadline."""
        if self.deadline_s is None or len(self._running) < self.workers:
            return False
        now = time.monotonic()
        return all(now - started > self.deadline_s for started in self._running.values())

    def record(self, elapsed_s: float) -> None:
        """Fold one call's time into the running mean (calls through `run` are recorded already)."""
        self._mean_s = (1 - SMOOTHING) * self._mean_s + SMOOTHING * elapsed_s

    def expected_s(self) -> float:
        """When a call asking now would likely be done: the rounds of `workers` calls ahead of it (those
        running and those waiting) and its own, at the running mean call time."""
        return (math.ceil((self._waiting + 1) / self.workers) + 1) * self._mean_s

    def retry_after(self, ahead: int | None = None) -> int:
        """Whole seconds until `ahead` calls (default: those waiting and one more) have likely run:
        rounds of `workers` x the running mean call time, at least 1."""
        count = self._waiting + 1 if ahead is None else ahead
        return max(1, math.ceil(math.ceil(count / self.workers) * self._mean_s))

    def refusal(self) -> Overloaded | None:
        """Why a call asking now would be refused at once (None: it may wait for a slot)."""
        if not self._free.locked():
            return None
        busy = f"all {self.workers} {self.name} workers are busy"
        if self.queue is not None and self._waiting >= self.queue:
            if self.queue == 0:
                return Overloaded(self.retry_after(), busy)
            return Overloaded(self.retry_after(), f"{busy} and {self._waiting} {self.callers} wait for one")
        expected_s = self.expected_s()
        if self.deadline_s is not None and expected_s > self.deadline_s:
            return Overloaded(
                self.retry_after(),
                f"{busy}: after the {self._waiting} {self.callers} waiting, this one would be done in "
                f"about {expected_s:.1f} s, past its {self.deadline_s:g} s deadline",
            )
        return None

    async def run(self, call: Callable[..., T], *args: object) -> T:
        """`call(*args)` in one of the threads; Overloaded when it may not wait (`refusal`), the `late`
        error when its result is not there `deadline_s` after asking."""
        refused = self.refusal()
        if refused is not None:
            raise refused
        loop = asyncio.get_running_loop()
        deadline = None if self.deadline_s is None else loop.time() + self.deadline_s
        free = self._free  # the one this call gives its slot back to, even after a `close`
        self._waiting += 1
        try:
            async with asyncio.timeout_at(deadline):
                await free.acquire()
        except TimeoutError:
            raise self._too_late() from None
        finally:
            self._waiting -= 1
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix=f"gaitlu-{self.name}")
        key, started = next(self._ids), time.monotonic()
        self._running[key] = started
        # in the caller's context, as asyncio.to_thread does: the thread's log lines name its request
        context = contextvars.copy_context()
        future = loop.run_in_executor(self._executor, functools.partial(context.run, call, *args))

        def done(finished: asyncio.Future[T]) -> None:  # on the loop, when the thread is done
            self._running.pop(key, None)
            self.record(time.monotonic() - started)
            free.release()
            if not finished.cancelled():
                finished.exception()  # retrieved: a caller past its deadline no longer awaits it

        future.add_done_callback(done)
        if deadline is None:
            return await asyncio.shield(future)  # a caller leaving never frees the slot early
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(future)
        except TimeoutError:
            if future.done():  # the call's own error, not the deadline
                raise
            raise self._too_late() from None

    def _too_late(self) -> Exception:
        assert self._late is not None and self.deadline_s is not None  # checked in __init__
        return self._late(self.deadline_s, self.retry_after())

    def close(self, *, wait: bool = False) -> None:
        """Give the threads back (`wait`: once the running calls are done; else let them end on their
        own); a later `run` (on any loop) starts afresh."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait)
            self._executor = None
        self._free = asyncio.Semaphore(self.workers)
        self._running.clear()

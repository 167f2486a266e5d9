"""Dynamic micro-batching: sequences from concurrent requests share one runtime call.

A request submits its sequences; a single worker task takes up to `max_batch` queued sequences, waiting
at most `max_wait_ms` after the oldest arrived for more to join (only while requests come concurrently:
after a batch of one the next runs at once, so a lone client never pays the wait), and runs the runtime
in a thread of its own (one slot, engine/slots.py) so the event loop keeps serving. While a batch runs,
new arrivals queue and form the next one, so the batch size follows the load. Results are identical to
unbatched calls because the runtime never pads (it groups sequences of equal length).

The queue is bounded: a request whose sequences do not all fit is refused at once (`Overloaded`, all or
none, so a multi-file request is never half-served). A failed runtime call fails only its batch
(`InferenceFailed`). The readiness check has a lane of its own (`priority`): it joins the next batch
whatever waits, so it measures whether the model answers, not how long the queue is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.errors import InferenceFailed, InferenceTimeout, Overloaded, ShuttingDown
from engine.metrics import EngineMetrics
from engine.slots import Slots
from engine.timings import timings

logger = logging.getLogger(__name__)

EmbedFn = Callable[[list[np.ndarray]], np.ndarray]  # (T_i, 64, 44) sequences -> (N, P, C)


@dataclass(frozen=True)
class BatchSettings:
    max_batch: int = 8  # sequences per runtime call; 1 turns batching off
    max_wait_ms: float = 2.0
    max_queue: int = 128  # sequences waiting (not yet in a running batch)
    timeout_s: float = 120.0  # a request waits at most this long for its result


@dataclass(frozen=True)
class Embedded:
    vector: np.ndarray  # (P, C) float32
    queue_ms: float  # from submission to the start of its batch
    inference_ms: float  # its batch's runtime call
    batch_size: int


@dataclass
class _Job:
    frames: np.ndarray
    future: asyncio.Future[Embedded]
    enqueued: float


class Batcher:
    """Queue + one worker task + one inference thread. `start`/`stop` are idempotent."""

    def __init__(
        self,
        embed: EmbedFn,
        settings: BatchSettings,
        metrics: EngineMetrics,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._embed = embed
        self.settings = settings
        self._metrics = metrics
        self._on_failure = on_failure
        self._pending: deque[_Job] = deque()
        self._priority: deque[_Job] = deque()  # the readiness check's lane: taken first, never refused
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._inference = Slots("inference", 1, None)  # one runtime call at a time; its mean: Retry-After
        self._closed = False
        self._last_batch_size = settings.max_batch  # > 1: requests come concurrently, worth waiting for

    @property
    def depth(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        if self._worker is not None:
            return
        self._closed = False
        self._worker = asyncio.create_task(self._run(), name="gaitlu-batcher")

    async def stop(self) -> None:
        """Refuse new work, fail what is queued, let a running batch finish, release the thread."""
        self._closed = True
        for queue in (self._priority, self._pending):
            while queue:
                job = queue.popleft()
                if not job.future.done():
                    job.future.set_exception(ShuttingDown())
        self._metrics.queue_depth.set(0)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._inference.close(wait=True)

    async def submit(self, sequences: list[np.ndarray], *, priority: bool = False) -> list[Embedded]:
        """Embed (T_i, 64, 44) sequences; `Overloaded` if they do not all fit in the queue.

        `priority` puts them ahead of the queue, admitted even when it is full (the readiness check: an
        overloaded server is busy, not broken, and its probe must not wait for the whole queue)."""
        if self._closed or self._worker is None:
            raise ShuttingDown()
        if not priority and len(self._pending) + len(sequences) > self.settings.max_queue:
            raise Overloaded(self._retry_after())
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        jobs = [_Job(frames, loop.create_future(), now) for frames in sequences]
        (self._priority if priority else self._pending).extend(jobs)
        self._metrics.queue_depth.set(len(self._pending))
        self._arrived.set()
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                results = await asyncio.gather(*(job.future for job in jobs))
        except TimeoutError:
            raise InferenceTimeout() from None
        finally:
            for job in jobs:  # a cancelled or failed request frees its queued items
                job.future.cancel()
        collector = timings.get()
        if collector is not None:
            for result in results:
                collector.record(result.queue_ms, result.inference_ms)
        return results

    def _retry_after(self) -> int:
        """Seconds until the queue has likely drained: batches queued x observed batch time."""
        return self._inference.retry_after(math.ceil(len(self._pending) / self.settings.max_batch))

    async def _next_batch(self) -> list[_Job]:
        """Wait for work, then up to max_wait for the batch to fill; skip abandoned jobs."""
        while True:
            while not self._pending and not self._priority:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = (self._priority or self._pending)[0].enqueued + self.settings.max_wait_ms / 1000
            while (
                self._last_batch_size > 1
                and not self._priority
                and len(self._pending) < self.settings.max_batch
            ):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    async with asyncio.timeout(remaining):
                        await self._arrived.wait()
                except TimeoutError:
                    break
            batch = self._take()
            self._metrics.queue_depth.set(len(self._pending))
            if batch:
                self._last_batch_size = len(batch)
                return batch

    def _take(self) -> list[_Job]:
        """Up to max_batch live jobs: the priority lane's first, then the queue's in arrival order."""
        batch: list[_Job] = []
        for queue in (self._priority, self._pending):
            while queue and len(batch) < self.settings.max_batch:
                job = queue.popleft()
                if not job.future.done():
                    batch.append(job)
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            started = time.perf_counter()
            try:
                vectors = await self._inference.run(self._embed, [job.frames for job in batch])
            except Exception as exc:
                logger.exception("inference failed on a batch of %d sequences", len(batch))
                self._metrics.inference_failures.inc()
                if self._on_failure is not None:
                    self._on_failure(exc)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(InferenceFailed(exc))
                continue
            elapsed = time.perf_counter() - started
            self._metrics.inference.observe(elapsed)
            self._metrics.batch_size.observe(len(batch))
            for job, vector in zip(batch, vectors, strict=True):
                self._metrics.queue_wait.observe(started - job.enqueued)
                if not job.future.done():
                    job.future.set_result(
                        Embedded(vector, (started - job.enqueued) * 1000, elapsed * 1000, len(batch))
                    )

"""Per-request context shared by the middleware, the logs and the batcher: the request id and timings.

The middleware sets both at the start of a request; code below it (the engine, the batcher, error
handlers, log records) reads them without passing them through every call. Outside a request (the
engine used from Python) there is no timings collector and nothing is recorded.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class RequestTimings:
    """Milliseconds one request spent waiting in the batch queue and in inference (max over its items:
    items of one request wait and run side by side)."""

    queue_ms: float = 0.0
    inference_ms: float = 0.0

    def record(self, queue_ms: float, inference_ms: float) -> None:
        self.queue_ms = max(self.queue_ms, queue_ms)
        self.inference_ms = max(self.inference_ms, inference_ms)


request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
timings: ContextVar[RequestTimings | None] = ContextVar("timings", default=None)

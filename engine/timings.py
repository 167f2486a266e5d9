"""Per-call timings without threading them through every call: a collector in a ContextVar.

A caller that wants them (the service's request middleware, for its X-Queue-Time-Ms and
X-Inference-Time-Ms headers and log line) sets `timings` at the start of a request; the batcher records
into whatever collector the current context holds. Outside such a caller (the engine used from Python or
the offline CLI) there is none and nothing is recorded.
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


timings: ContextVar[RequestTimings | None] = ContextVar("timings", default=None)

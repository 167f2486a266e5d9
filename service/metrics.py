"""The service's Prometheus metrics: the engine's (engine/metrics.py) plus HTTP requests and latency per
route template (never the raw path: gallery names would explode the label set) and rejected requests by
reason, in one registry per app.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from engine.metrics import LATENCY_BUCKETS, EngineMetrics


class Metrics(EngineMetrics):
    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.requests = Counter(
            "gaitlu_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "gaitlu_http_request_seconds", "HTTP request latency", ["method", "route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.rejected = Counter(
            "gaitlu_rejected_requests", "Requests refused, by reason", ["reason"], registry=r
        )

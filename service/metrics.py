"""The service's Prometheus metrics: the engine's (engine/metrics.py) plus HTTP requests and latency per
route template (never the raw path: gallery names would explode the label set), rejected requests by
reason and what admission holds (requests and body bytes in flight), in one registry per app.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
        self.in_flight = Gauge(
            "gaitlu_requests_in_flight", "Requests admitted and being served (probes excepted)", registry=r
        )
        self.body_bytes_in_flight = Gauge(
            "gaitlu_request_body_bytes_in_flight",
            "Declared body bytes of the requests being served (what admission bounds)",
            registry=r,
        )

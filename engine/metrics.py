"""The engine's Prometheus metrics, in a registry per engine (two in one process, e.g. tests, do not
collide): time waiting in the batch queue versus time in inference, batch sizes, queue depth, decodes
running and waiting, decode time, runtime failures, and gallery sizes read from the store at scrape
time.

The service adds its HTTP metrics to the same registry (service/metrics.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gallery.records import GalleryStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)


class _GalleryCollector(Collector):
    """Gallery sizes from the store's in-memory figures, read when Prometheus scrapes."""

    def __init__(self) -> None:
        self.source: Callable[[], list[GalleryStats]] | None = None

    def collect(self) -> Iterable[Metric]:
        sequences = GaugeMetricFamily("gaitlu_gallery_sequences", "Sequences enrolled", labels=["gallery"])
        subjects = GaugeMetricFamily("gaitlu_gallery_subjects", "Subjects enrolled", labels=["gallery"])
        for stats in self.source() if self.source is not None else []:
            sequences.add_metric([stats.name], stats.sequences)
            subjects.add_metric([stats.name], stats.subjects)
        yield sequences
        yield subjects


class EngineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_wait = Histogram(
            "gaitlu_queue_wait_seconds", "Time a sequence waited for its batch to start",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference = Histogram(
            "gaitlu_inference_seconds", "Runtime time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "gaitlu_batch_size", "Sequences per runtime call", buckets=_BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("gaitlu_queue_depth", "Sequences waiting for inference", registry=r)
        self.decodes_running = Gauge(
            "gaitlu_decodes_running", "Uploads being decoded in decode threads now", registry=r
        )
        self.decodes_waiting = Gauge(
            "gaitlu_decodes_waiting", "Uploads waiting for a free decode thread", registry=r
        )
        self.inference_failures = Counter(
            "gaitlu_inference_failures", "Runtime calls that raised", registry=r
        )
        self.decode = Histogram(
            "gaitlu_decode_seconds", "Decoding and preprocessing per uploaded sequence",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._galleries = _GalleryCollector()
        r.register(self._galleries)

    def watch_galleries(self, source: Callable[[], list[GalleryStats]] | None) -> None:
        """Report the sizes `source()` returns at each scrape (None: stop reporting)."""
        self._galleries.source = source

    def render(self) -> bytes:
        return generate_latest(self.registry)

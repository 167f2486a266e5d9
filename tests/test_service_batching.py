"""Micro-batching through the real app: concurrent requests share runtime calls and get the same vectors
as one-at-a-time calls; a full queue answers 429 with Retry-After; a failed batch makes the service
unready until a readiness check succeeds again.

The runtime is the real tiny model; where a test must hold or break inference at a chosen moment it
wraps the real embedder (a gate or a one-shot fault), never replaces it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import numpy as np
import pytest

from runtime import load_artifact_embedder
from service.app import create_app
from tests.support.servers import gauge_in, npy_bytes, settings_for, until_async
from tests.support.walkers import walking_sequence


@pytest.fixture(scope="module")
def embedder(tiny_artifact):
    return load_artifact_embedder(tiny_artifact, backend="cpu")


class GatedEmbedder:
    """The real embedder behind a gate: calls block until `gate` is set; `entered` says one is waiting."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate, self.entered = threading.Event(), threading.Event()
        self.gate.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed(self, batch: list[np.ndarray]) -> np.ndarray:
        self.entered.set()
        if not self.gate.wait(30):
            raise TimeoutError("test gate never opened")
        return self.inner.embed(batch)


class FaultyEmbedder:
    """The real embedder, except that the next `failures` calls raise."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed(self, batch: list[np.ndarray]) -> np.ndarray:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("injected runtime failure")
        return self.inner.embed(batch)


def run_app(
    artifact,
    data_dir,
    embedder: Any,
    body: Callable[[httpx.AsyncClient, Any], Awaitable[None]],
    **values: Any,
) -> None:
    """Start the app's engine, run `body(client, app)` against it in-process, stop the engine."""
    app = create_app(settings_for(artifact, data_dir, **values), embedder=embedder)

    async def main() -> None:
        engine = app.state.engine
        await engine.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                await body(c, app)
        finally:
            await engine.stop()

    asyncio.run(main())


def embed_one(c: httpx.AsyncClient, seq: np.ndarray) -> Awaitable[httpx.Response]:
    return c.post("/embed", files={"files": ("s.npy", npy_bytes(seq))})


def test_concurrent_requests_share_batches_and_match_unbatched(tiny_artifact, tmp_path, embedder):
    lengths = [6, 6, 6, 9, 9, 5, 5, 7]  # equal lengths share runtime calls; others run beside them
    sequences = [walking_sequence(i, n) for i, n in enumerate(lengths)]
    unbatched = [embedder.embed([seq])[0].reshape(-1) for seq in sequences]

    async def body(c: httpx.AsyncClient, app: Any) -> None:
        responses = await asyncio.gather(*(embed_one(c, seq) for seq in sequences))
        for response, expected in zip(responses, unbatched, strict=True):
            assert response.status_code == 200, response.text
            got = np.asarray(response.json()["data"][0]["embedding"], np.float32)
            # onnxruntime's batched convolutions round differently from batch 1 in the last bits only.
            np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
        sizes = app.state.metrics.batch_size
        count = sizes.collect()[0].samples
        total = next(s.value for s in count if s.name.endswith("_sum"))
        calls = next(s.value for s in count if s.name.endswith("_count"))
        assert total == len(sequences) and calls < len(sequences)  # some runtime call held > 1 request
        metrics = (await c.get("/metrics")).text
        assert "gaitlu_queue_wait_seconds_count" in metrics and "gaitlu_inference_seconds_count" in metrics

    run_app(tiny_artifact, tmp_path, embedder, body, max_batch=8, max_wait_ms=300)


def test_full_queue_answers_429_with_retry_after(tiny_artifact, tmp_path, embedder):
    gated = GatedEmbedder(embedder)

    async def body(c: httpx.AsyncClient, app: Any) -> None:
        gated.gate.clear()
        gated.entered.clear()
        running = asyncio.create_task(embed_one(c, walking_sequence(1)))
        await until_async(gated.entered.is_set, what="the first request inside the runtime, holding it")
        queued = [asyncio.create_task(embed_one(c, walking_sequence(i))) for i in (2, 3)]

        async def two_queued() -> bool:
            return gauge_in((await c.get("/metrics")).text, "gaitlu_queue_depth") >= 2

        await until_async(two_queued, what="two requests queued")
        refused = await embed_one(c, walking_sequence(4))
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "overloaded"
        assert int(refused.headers["Retry-After"]) >= 1
        gated.gate.set()
        for task in (running, *queued):
            assert (await task).status_code == 200
        assert (await embed_one(c, walking_sequence(5))).status_code == 200
        assert 'gaitlu_rejected_requests_total{reason="overloaded"} 1.0' in (await c.get("/metrics")).text

    run_app(tiny_artifact, tmp_path, gated, body, max_batch=1, max_queue=2, max_files=2)


def test_inference_failure_makes_the_service_unready_until_a_probe_succeeds(
    tiny_artifact, tmp_path, embedder
):
    faulty = FaultyEmbedder(embedder)

    async def body(c: httpx.AsyncClient, app: Any) -> None:
        assert (await c.get("/readyz")).status_code == 200
        faulty.failures = 2  # this request's batch and the next probe
        failed = await embed_one(c, walking_sequence(1))
        assert failed.status_code == 503 and failed.json()["error"]["code"] == "inference_failed"
        assert not app.state.engine.ready
        assert (await c.get("/healthz")).status_code == 200  # alive, but
        assert (await c.get("/readyz")).status_code == 503  # not ready: the probe failed too
        assert (await c.get("/readyz")).status_code == 200  # the runtime answers again
        assert (await embed_one(c, walking_sequence(1))).status_code == 200
        assert "gaitlu_inference_failures_total 2.0" in (await c.get("/metrics")).text

    run_app(tiny_artifact, tmp_path, faulty, body)

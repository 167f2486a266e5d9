"""Pure ASGI middleware: the request context (id, timings, log line, metrics) and the body-size limit.

Pure ASGI rather than BaseHTTPMiddleware: no extra task per request, and the body limit can answer 413
from the Content-Length header before a byte of the body is read.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.timings import RequestTimings, timings
from service.context import request_id
from service.errors import INTERNAL_ERROR, Carried, PayloadTooLarge, respond
from service.metrics import Metrics

logger = logging.getLogger("service.access")

_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestContextMiddleware:
    """Request id (the client's X-Request-ID if sane, else a new one) and queue/inference timings on
    every response; one JSON log line and the request metrics per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        rid = given if _CLIENT_ID.fullmatch(given) else uuid.uuid4().hex
        # Not reset afterwards: each request runs in its own task (its own context), and the last-resort
        # 500 handler, which runs outside this middleware, still reads the id.
        request_id.set(rid)
        spent = RequestTimings()
        timings.set(spent)
        status = INTERNAL_ERROR  # what the log and metrics say if the app fails before answering
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = rid
                headers["X-Queue-Time-Ms"] = f"{spent.queue_ms:.3f}"
                headers["X-Inference-Time-Ms"] = f"{spent.inference_ms:.3f}"
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")  # the template, never the raw path
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            logger.info(
                "%s %s %d",
                method,
                scope["path"],
                status,
                extra={
                    "method": method,
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "queue_ms": round(spent.queue_ms, 3),
                    "inference_ms": round(spent.inference_ms, 3),
                },
            )


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413: at once when Content-Length says so (nothing is
    read), else as soon as the streamed body passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = respond(PayloadTooLarge(self.max_bytes), self.metrics, {"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise Carried(PayloadTooLarge(self.max_bytes))
            return message

        await self.app(scope, limited_receive, send)

"""Pure ASGI middleware: the request context (id, timings, log line, metrics), browser guards,
admission control and the body-size limit.

Pure ASGI rather than BaseHTTPMiddleware: no extra task per request, and the guards can answer from the
headers alone (413, 400, 403, 429) before a byte of the body is read.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import re
import time
import uuid
from http import HTTPStatus
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.errors import Overloaded
from engine.timings import RequestTimings, timings
from gaitlu.errors import GaitluError
from service.context import request_id
from service.errors import (
    INTERNAL_ERROR,
    BodyTimeout,
    Carried,
    CrossOrigin,
    InvalidHost,
    PayloadTooLarge,
    respond,
)
from service.metrics import Metrics
from service.settings import Settings

logger = logging.getLogger("service.access")
MAX_LOGGED_BODY = 64 * 1024  # error bodies are small; a larger body is not read for its code

_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def error_code(body: bytes) -> str | None:
    """The `error.code` of an error response's JSON body (the one error shape), if it is one."""
    if len(body) > MAX_LOGGED_BODY:
        return None
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


class RequestContextMiddleware:
    """Request id (the client's X-Request-ID if sane, else a new one) and queue/inference timings on
    every response; one JSON log line and the request metrics per request. A 4xx or 5xx line carries
    the error's `code`, read from the response's body."""

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
        code: str | None = None
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal status, code
            if message["type"] == "http.response.body" and status >= HTTPStatus.BAD_REQUEST and code is None:
                code = error_code(message.get("body", b""))  # error bodies come whole, in one message
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
                    **({"code": code} if code is not None else {}),
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


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})  # answered whatever the load: orchestrators poll them


async def _refuse(scope: Scope, receive: Receive, send: Send, metrics: Metrics, error: GaitluError) -> None:
    """Answer `error` without reading the body. The connection stays open: uvicorn discards the rest of
    the body as it arrives (holding none of it), so the client reads this answer instead of a reset."""
    await respond(error, metrics)(scope, receive, send)


def host_name(header: str) -> str:
    """`Host` header -> lower-case name without the port (`[::1]:8000` -> `::1`)."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class BrowserGuardMiddleware:
    """What a web page the operator happens to visit must not be able to do to this server.

    - Host: only the configured names (`Settings.hosts`) are served, so a DNS-rebinding page, whose
      requests carry its own name, cannot read the API (400 `invalid_host`).
    - Cross-origin writes: a POST or DELETE that a browser marks as coming from another site
      (`Sec-Fetch-Site: cross-site` or `same-site`, or else an `Origin` other than this server's own)
      is refused (403 `cross_origin`) unless the origin is in `cors_origins`. A multipart form is a CORS
      "simple request": without this, any page could enrol or delete on a keyless loopback server.
      Clients that are not browsers send neither header and are not affected; the web page's own
      requests are same-origin.
    """

    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.hosts = settings.hosts
        self.any_host = "*" in self.hosts
        self.trusted_origins = frozenset(settings.cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        problem = self.host_problem(headers.get("host", "")) or self.origin_problem(scope["method"], headers)
        if problem is not None:
            await _refuse(scope, receive, send, self.metrics, problem)
            return
        await self.app(scope, receive, send)

    def host_problem(self, header: str) -> InvalidHost | None:
        name = host_name(header)
        if self.any_host or any(fnmatch.fnmatchcase(name, pattern) for pattern in self.hosts):
            return None
        return InvalidHost(name, self.hosts)

    def origin_problem(self, method: str, headers: Headers) -> CrossOrigin | None:
        if method in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and (origin in self.trusted_origins or "*" in self.trusted_origins):
            return None
        site = headers.get("sec-fetch-site")
        if site is not None:
            if site in ("same-origin", "none"):
                return None
            seen = f"Sec-Fetch-Site: {site}"
        elif origin is None or (
            origin != "null" and urlsplit(origin).netloc.lower() == headers.get("host", "").lower()
        ):
            return None  # not a browser (or an old one on this server's own page)
        else:
            seen = f"Origin: {origin}"
        return CrossOrigin(
            f"refused a {method} from another site ({seen}): browsers may change this server only from its "
            "own page or an origin in GAITLU_CORS_ORIGINS"
        )


class AdmissionMiddleware:
    """Bound the requests being served at once and the bodies they hold, and how long a body may take.

    Over `max_requests_in_flight` requests, or `max_body_bytes_in_flight` bytes of declared bodies (a
    chunked body counts as `max_upload_bytes`), a request is answered 429 with Retry-After at once,
    without reading its body: the server never queues work without bound. A body that has not fully
    arrived `body_timeout_s` after the request was admitted gets 408 (a slowloris client cannot hold
    a slot and its memory for ever). The probes are exempt, so load never makes a healthy server look
    dead.
    """

    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.max_requests = settings.max_requests_in_flight
        self.max_bytes = settings.max_body_bytes_in_flight
        self.max_upload = settings.max_upload_bytes
        self.body_timeout = settings.body_timeout_s
        self.requests = 0  # on the event loop only: no lock needed
        self.body_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        cost = self.body_cost(Headers(scope=scope))
        if self.requests >= self.max_requests:
            problem = f"the server is serving its limit of {self.max_requests} requests"
        elif self.body_bytes + cost > self.max_bytes:
            problem = f"the server holds its limit of {self.max_bytes} bytes of request bodies"
        else:
            problem = None
        if problem is not None:
            await _refuse(scope, receive, send, self.metrics, Overloaded(1, problem))
            return
        self._hold(1, cost)
        try:
            await self.app(scope, self.timed(receive), send)
        finally:
            self._hold(-1, -cost)

    def _hold(self, requests: int, body_bytes: int) -> None:
        self.requests += requests
        self.body_bytes += body_bytes
        self.metrics.in_flight.set(self.requests)
        self.metrics.body_bytes_in_flight.set(self.body_bytes)

    def body_cost(self, headers: Headers) -> int:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit():
            return min(int(declared), self.max_upload)  # more is refused with 413 further in
        return self.max_upload if "transfer-encoding" in headers else 0

    def timed(self, receive: Receive) -> Receive:
        """`receive` that fails (BodyTimeout) once the body is overdue; after the body it waits freely."""
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        done = False

        async def timed_receive() -> Message:
            nonlocal done
            if done:
                return await receive()  # the disconnect message: no deadline
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(left, 0.0))
            except TimeoutError:
                raise Carried(BodyTimeout(self.body_timeout)) from None
            done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return timed_receive

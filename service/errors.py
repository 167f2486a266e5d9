"""One JSON error shape for every failure, and the one table where errors become HTTP statuses.

Every error response is `{"error": {"code": str, "message": str, "detail": any, "request_id": str}}`.
Nothing below the routes knows HTTP: the engine, the galleries and the input stages raise domain errors,
and the HTTP layer raises its own (`Unauthorized`, `PayloadTooLarge`, `InvalidRequest`, ... below), also
without a status. `STATUSES` maps each to its status, code, detail and headers; the handlers installed by
`install_error_handlers` apply it. Only an unexpected exception (a bug) becomes a 500, with a generic
message: its details go to the log under the request id, not to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from audit.errors import AlreadyReviewed, AuditRecordNotFound, AuditWriteFailed, NotReviewable
from engine.errors import (
    DecodeTimeout,
    InferenceFailed,
    InferenceTimeout,
    InvalidTrack,
    MethodUnavailable,
    NotCalibrated,
    NotReady,
    NotStarted,
    Overloaded,
    ShuttingDown,
    VideoTooLarge,
)
from gaitlu.errors import GaitluError, SequenceError, UnsafePickleError
from gaitlu.schemas import ErrorResponse
from gallery.errors import (
    ConflictError,
    GalleryExistsError,
    InvalidInputError,
    ModelMismatchError,
    NotFoundError,
    SequenceIdConflictError,
    StoreClosedError,
    StoreFullError,
    StoreUnavailableError,
    TamperedDataError,
)
from service.context import request_id
from service.metrics import Metrics
from video import NoPersonError, NothingToEmbedError, TrackQualityError, VideoError, VideoLimitError

logger = logging.getLogger(__name__)

REEMBED_REMEDY = (
    "serve the model the gallery was built with, or enrol the subjects again into a new gallery "
    "with the running model (`gaitlu enroll DATASET --gallery NEW --create`)"
)


# ----- the HTTP layer's own errors (raised by routes, dependencies and middleware)


class HttpLayerError(GaitluError):
    """A request refused by the HTTP layer itself: its key, its size, its encoding or its shape."""


class Unauthorized(HttpLayerError):
    """No API key, or one that is not configured."""


class Forbidden(HttpLayerError):
    """A read-only key on a route that writes."""


class PayloadTooLarge(HttpLayerError):
    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"the request body is over the {limit_bytes}-byte limit")
        self.limit_bytes = limit_bytes


class HeadTooLarge(HttpLayerError):
    """The request line and headers together are over the head limit (answered by the connection itself,
    service/connections.py: the request never reaches the app)."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"the request head (request line and headers) is over the {limit_bytes}-byte limit")
        self.limit_bytes = limit_bytes


class UnsupportedMediaType(HttpLayerError):
    def __init__(self, got: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"content type {got or '(none)'!r} is not accepted here; send {' or '.join(allowed)}"
        )
        self.allowed = allowed


class NamedProblem(HttpLayerError):
    """An HTTP-layer error that names its problem itself (`code`), for the table to pass on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class InvalidRequest(NamedProblem):
    """The body parses but does not say what the route needs."""


class InvalidHost(HttpLayerError):
    """The Host header names a host this server does not answer to (DNS rebinding)."""

    def __init__(self, name: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"this server does not answer to the host name {name!r}: set GAITLU_ALLOWED_HOSTS to the names "
            f"clients use (now {', '.join(allowed)})"
        )
        self.allowed = allowed


class CrossOrigin(HttpLayerError):
    """A browser write from another site (a CORS simple request the server must not obey)."""


class BodyTimeout(HttpLayerError):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request body did not arrive within {timeout_s:g} s")
        self.timeout_s = timeout_s


class ResourceNotFound(HttpLayerError, LookupError):
    """A route-level resource (a static file, a demo sequence) does not exist."""


class Unavailable(NamedProblem):
    """A route cannot serve for now (e.g. the demo sequences cannot be prepared)."""


# ----- the table


@dataclass(frozen=True)
class Status:
    error: type[Exception]
    status: int
    code: str | None  # None: the error's own (a NamedProblem's `code`)
    detail: Callable[[Any], Any] | None = None
    headers: Callable[[Any], dict[str, str]] | None = None


def _mismatch(exc: ModelMismatchError) -> dict[str, str]:
    return {
        "gallery": exc.gallery,
        "gallery_model_hash": exc.gallery_hash,
        "service_model_hash": exc.given_hash,
        "remedy": REEMBED_REMEDY,
    }


def _tracks(exc: NothingToEmbedError | InvalidTrack) -> Any:
    return None if exc.result is None else exc.result.report()  # the tracks found and why each was refused


CLOSE = {"Connection": "close"}  # the rest of the body will not be read


def _retry_after(exc: Overloaded | DecodeTimeout) -> dict[str, str]:
    return {"Retry-After": str(exc.retry_after_s)}


# Most specific first: the first row whose class matches decides.
STATUSES: tuple[Status, ...] = (
    # the HTTP layer
    Status(Unauthorized, 401, "unauthorized", headers=lambda e: {"WWW-Authenticate": "APIKey"}),
    Status(Forbidden, 403, "forbidden"),
    Status(InvalidHost, 400, "invalid_host", lambda e: {"allowed_hosts": list(e.allowed)}),
    Status(CrossOrigin, 403, "cross_origin"),
    Status(
        BodyTimeout,
        408,
        "body_timeout",
        lambda e: {"timeout_s": e.timeout_s},
        lambda e: {"Connection": "close"},
    ),
    Status(PayloadTooLarge, 413, "payload_too_large", lambda e: {"limit_bytes": e.limit_bytes}),
    Status(HeadTooLarge, 431, "head_too_large", lambda e: {"limit_bytes": e.limit_bytes}, lambda e: CLOSE),
    Status(UnsupportedMediaType, 415, "unsupported_media_type", lambda e: {"allowed": list(e.allowed)}),
    Status(InvalidRequest, 422, None),
    Status(ResourceNotFound, 404, "not_found"),
    Status(Unavailable, 503, None),
    # the engine
    Status(Overloaded, 429, "overloaded", lambda e: {"retry_after_s": e.retry_after_s}, _retry_after),
    Status(NotStarted, 503, "not_started"),
    Status(ShuttingDown, 503, "shutting_down"),
    Status(NotReady, 503, "not_ready"),
    Status(InferenceFailed, 503, "inference_failed", lambda e: {"error": e.cause}),
    Status(InferenceTimeout, 504, "inference_timeout"),
    Status(DecodeTimeout, 503, "decode_timeout", lambda e: {"retry_after_s": e.retry_after_s}, _retry_after),
    Status(VideoTooLarge, 413, "video_too_large", lambda e: {"limit_bytes": e.limit_bytes}),
    Status(MethodUnavailable, 422, "method_unavailable"),
    Status(InvalidTrack, 422, "invalid_track", _tracks),
    Status(NotCalibrated, 409, "not_calibrated", lambda e: {"remedy": NotCalibrated.REMEDY}),
    # the input stages
    Status(UnsafePickleError, 422, "unsafe_pickle"),
    Status(NoPersonError, 422, "no_person", _tracks),
    Status(TrackQualityError, 422, "no_usable_track", _tracks),
    Status(VideoLimitError, 413, "video_too_large"),
    Status(VideoError, 422, "invalid_video"),
    Status(SequenceError, 422, "invalid_sequence"),
    # the galleries
    Status(ModelMismatchError, 409, "model_mismatch", _mismatch),
    Status(GalleryExistsError, 409, "gallery_exists"),
    Status(SequenceIdConflictError, 409, "sequence_id_conflict"),
    Status(ConflictError, 409, "conflict"),
    Status(NotFoundError, 404, "not_found"),
    Status(InvalidInputError, 422, "invalid_input"),
    Status(StoreClosedError, 503, "shutting_down"),
    Status(StoreFullError, 507, "insufficient_storage", lambda e: {"cause": e.cause}),
    Status(StoreUnavailableError, 503, "gallery_unavailable", headers=lambda e: {"Retry-After": "1"}),
    Status(TamperedDataError, 500, "tampered_data"),  # stored ciphertext altered: never garbage answers
    # the audit trail
    Status(AuditRecordNotFound, 404, "not_found"),
    Status(NotReviewable, 409, "not_reviewable"),
    Status(AlreadyReviewed, 409, "already_reviewed"),
    Status(AuditWriteFailed, 503, "audit_unavailable", lambda e: {"cause": e.cause}),
    # anything else meant for the user
    Status(GaitluError, 400, "bad_request"),
)
REJECTED_STATUSES = {401, 403, 413, 415, 429, 431}  # counted as rejected requests in the metrics
INTERNAL_ERROR = 500  # an unexpected exception: a bug


@dataclass(frozen=True)
class Answer:
    """What one error becomes on the wire."""

    status: int
    code: str
    message: str
    detail: Any
    headers: dict[str, str] | None


def answer(exc: GaitluError) -> Answer:
    """The table's verdict on a domain or HTTP-layer error."""
    row = next(row for row in STATUSES if isinstance(exc, row.error))
    code = row.code or (exc.code if isinstance(exc, NamedProblem) else "error")
    detail = row.detail(exc) if row.detail is not None else None
    headers = row.headers(exc) if row.headers is not None else None
    return Answer(row.status, code, str(exc), detail, headers)


class Carried(HTTPException):
    """A domain error raised where FastAPI would turn any non-HTTP exception into a bare 400 (while it
    reads a body for a route's body parameter, e.g. the body limit tripping): it travels through as an
    HTTPException and the handler answers for the error inside, from the table."""

    def __init__(self, error: GaitluError) -> None:
        verdict = answer(error)
        super().__init__(status_code=verdict.status, detail=verdict.message, headers=verdict.headers)
        self.error = error


def error_body(code: str, message: str, detail: Any = None, rid: str | None = None) -> dict[str, Any]:
    """The one error shape; `rid`: the request id where no request context is set (the connection)."""
    rid = request_id.get() if rid is None else rid
    return {"error": {"code": code, "message": message, "detail": detail, "request_id": rid}}


def error_response(
    status: int, code: str, message: str, detail: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, jsonable_encoder(detail)), status, headers=headers)


def respond(exc: GaitluError, metrics: Metrics, extra_headers: dict[str, str] | None = None) -> JSONResponse:
    """The response for an error, as the table says; refusals (REJECTED_STATUSES) are counted."""
    verdict = answer(exc)
    count_rejected(metrics, verdict.status, verdict.code)
    headers = {**(verdict.headers or {}), **(extra_headers or {})} or None
    return error_response(verdict.status, verdict.code, verdict.message, verdict.detail, headers)


def count_rejected(metrics: Metrics, status: int, code: str) -> None:
    if status in REJECTED_STATUSES:
        metrics.rejected.labels(reason=code).inc()


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, Carried):
        return await _domain_error(request, exc.error)
    # Starlette's own: unknown route (404), wrong method (405), malformed multipart (400)
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    count_rejected(request.app.state.metrics, exc.status_code, code)
    return error_response(exc.status_code, code, str(exc.detail), None, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only location, message and type: echoing `input` could return megabytes or undecodable bytes.
    detail = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return error_response(422, "validation_error", "the request does not match the API schema", detail)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GaitluError)
    return respond(exc, request.app.state.metrics)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """The last resort (Starlette's ServerErrorMiddleware, outside every other middleware): the id is
    set here, and uvicorn closes the connection after it (the exception is re-raised), so say so."""
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    rid = request_id.get()
    return error_response(
        INTERNAL_ERROR,
        "internal_error",
        f"internal server error; quote request id {rid} when reporting it",
        headers=CLOSE if rid is None else {"X-Request-ID": rid, **CLOSE},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(GaitluError, _domain_error)
    app.add_exception_handler(Exception, _unexpected)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": HTTPStatus(status).phrase, "model": ErrorResponse}
    for status in sorted({row.status for row in STATUSES})
}

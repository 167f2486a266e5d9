"""One JSON error shape for every failure, and the one place where domain errors become HTTP statuses.

Every error response is `{"error": {"code": str, "message": str, "detail": any, "request_id": str}}`.
Routes and the engine raise domain errors (gaitlu, gallery) or a `ServiceError`; the handlers installed by
`install_error_handlers` translate them. Only an unexpected exception (a bug) becomes a 500, with a
generic message: its details go to the log under the request id, not to the client.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from gaitlu.errors import GaitluError, SequenceError, UnsafePickleError
from gallery.errors import (
    ConflictError,
    GalleryExistsError,
    InvalidInputError,
    ModelMismatchError,
    NotFoundError,
    SequenceIdConflictError,
    StoreClosedError,
)
from service.context import request_id
from service.schemas import ErrorResponse
from video import NoPersonError, NothingToEmbedError, TrackQualityError, VideoError, VideoLimitError

logger = logging.getLogger(__name__)

REJECTED_STATUSES = {401, 403, 413, 415, 429}  # counted as rejected requests in the metrics
REEMBED_REMEDY = (
    "serve the model the gallery was built with, or enrol the subjects again into a new gallery "
    "with the running model (`gaitlu enroll DATASET --gallery NEW --create`)"
)


class ServiceError(HTTPException):
    """An HTTP-level failure raised by the service itself (auth, limits, overload, readiness).

    A subclass of Starlette's HTTPException so FastAPI passes it through unchanged even when it is
    raised while FastAPI reads a body (it turns any other exception there into a bare 400).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code
        self.message = message
        self.extra = detail


def payload_too_large(limit: int) -> ServiceError:
    return ServiceError(
        413, "payload_too_large", f"the request body is over the {limit}-byte limit", {"limit_bytes": limit}
    )


def overloaded(retry_after_s: int, reason: str = "the inference queue is full") -> ServiceError:
    return ServiceError(
        429,
        "overloaded",
        f"{reason}; retry later",
        {"retry_after_s": retry_after_s},
        headers={"Retry-After": str(retry_after_s)},
    )


def unsupported_media_type(got: str, allowed: tuple[str, ...]) -> ServiceError:
    return ServiceError(
        415,
        "unsupported_media_type",
        f"content type {got or '(none)'!r} is not accepted here; send {' or '.join(allowed)}",
        {"allowed": list(allowed)},
    )


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "detail": detail, "request_id": request_id.get()}}


def error_response(
    status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, jsonable_encoder(detail)), status, headers=headers)


# Most specific first: the first matching class decides.
_DOMAIN: tuple[tuple[type[Exception], int, str], ...] = (
    (UnsafePickleError, 422, "unsafe_pickle"),
    (NoPersonError, 422, "no_person"),
    (TrackQualityError, 422, "no_usable_track"),
    (VideoLimitError, 413, "video_too_large"),
    (VideoError, 422, "invalid_video"),
    (SequenceError, 422, "invalid_sequence"),
    (ModelMismatchError, 409, "model_mismatch"),
    (GalleryExistsError, 409, "gallery_exists"),
    (SequenceIdConflictError, 409, "sequence_id_conflict"),
    (ConflictError, 409, "conflict"),
    (NotFoundError, 404, "not_found"),
    (InvalidInputError, 422, "invalid_input"),
    (StoreClosedError, 503, "shutting_down"),
    (GaitluError, 400, "bad_request"),
)


def domain_status(exc: GaitluError) -> tuple[int, str]:
    return next((status, code) for cls, status, code in _DOMAIN if isinstance(exc, cls))


def _domain_detail(exc: GaitluError) -> Any:
    if isinstance(exc, ModelMismatchError):
        return {
            "gallery": exc.gallery,
            "gallery_model_hash": exc.gallery_hash,
            "service_model_hash": exc.given_hash,
            "remedy": REEMBED_REMEDY,
        }
    if isinstance(exc, NothingToEmbedError) and exc.result is not None:
        return exc.result.report()  # the tracks found and why each was refused
    return None


def _count_rejected(request: Request, status: int, code: str) -> None:
    if status in REJECTED_STATUSES:
        request.app.state.metrics.rejected.labels(reason=code).inc()


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, ServiceError):
        code, message, detail = exc.code, exc.message, exc.extra
    else:  # Starlette's own: unknown route (404), wrong method (405), malformed multipart (400)
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        message, detail = str(exc.detail), None
    _count_rejected(request, exc.status_code, code)
    return error_response(exc.status_code, code, message, detail, headers=exc.headers)


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
    status, code = domain_status(exc)
    return error_response(status, code, str(exc), _domain_detail(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        500, "internal_error", f"internal server error; quote request id {request_id.get()} when reporting it"
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(GaitluError, _domain_error)
    app.add_exception_handler(Exception, _unexpected)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": HTTPStatus(status).phrase, "model": ErrorResponse}
    for status in (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)
}

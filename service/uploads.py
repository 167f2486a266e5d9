"""Request bodies that carry sequences: multipart uploads or JSON with base64 .npy, read into `Upload`s.

Multipart files may also be videos (engine/videos.py); the text fields `method`, `track` and `strip`
say how a video becomes a sequence (`video_options`).

Routes that take sequences accept both encodings, so FastAPI's own body parsing (one content type per
route) is not used there: `read_body` is the one place that branches on the content type (anything but
JSON or multipart is UnsupportedMediaType), reads the body once and validates JSON with the same pydantic
models the OpenAPI schema shows. The body size was already bounded by the middleware before any of this
reads it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pydantic_core
from anyio.to_thread import run_sync
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from engine import Upload, VideoOptions, safe_name
from gaitlu.schemas import SequenceJSON, VideoParams
from service.errors import InvalidRequest, UnsupportedMediaType
from service.settings import Settings

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
JSON = "application/json"
MULTIPART = "multipart/form-data"
MAX_FORM_FIELDS = 256


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_media_type(request: Request, *allowed: str) -> str:
    found = media_type(request)
    if found not in allowed:
        raise UnsupportedMediaType(found, allowed)
    return found


def validation_error(exc: ValidationError, prefix: tuple[str, ...]) -> RequestValidationError:
    return RequestValidationError(
        [{**e, "loc": (*prefix, *e["loc"])} for e in exc.errors(include_input=False, include_url=False)]
    )


def validate_model(model: type[M], data: Any, prefix: tuple[str, ...] = ("body",)) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, prefix) from None


async def read_json(request: Request, model: type[M]) -> M:
    """The body validated as `model`, in a worker thread: a 30 MB body of small entries takes seconds
    to validate, and on the event loop it would stall every other request meanwhile."""
    return await run_sync(parse_json, await request.body(), model)


def parse_json(body: bytes, model: type[M]) -> M:
    """422 for invalid JSON, including the non-JSON tokens NaN and Infinity (pydantic's own JSON parsing
    accepts them, and such a float has no meaning in any field here)."""
    try:
        data = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        try:
            pydantic_core.from_json(body)  # only on a failure: was it NaN or Infinity?
            problem = "NaN and Infinity are not JSON numbers"
        except ValueError:
            problem = str(exc)
        error = {"type": "json_invalid", "loc": ("body",), "msg": f"Invalid JSON: {problem}", "input": ""}
        raise RequestValidationError([error]) from None
    return validate_model(model, data)


@asynccontextmanager
async def open_form(request: Request, settings: Settings) -> AsyncIterator[FormData]:
    """The parsed multipart form; its spooled temporary files are closed on exit."""
    form = await request.form(max_files=settings.max_files, max_fields=MAX_FORM_FIELDS)
    try:
        yield form
    finally:
        await form.close()


async def read_body(
    request: Request,
    settings: Settings,
    json_model: type[M],
    from_json: Callable[[M], T],
    from_form: Callable[[FormData], Awaitable[T]],
) -> T:
    """A body that may be either encoding: JSON, validated by `json_model`, goes to `from_json`; a
    multipart form to `from_form` (its spooled files are closed when it returns)."""
    if require_media_type(request, MULTIPART, JSON) == JSON:
        return from_json(await read_json(request, json_model))
    async with open_form(request, settings) as form:
        return await from_form(form)


def check_count(n: int, settings: Settings) -> None:
    if n > settings.max_files:
        raise InvalidRequest(
            "too_many_sequences", f"{n} sequences in one request; the limit is {settings.max_files}"
        )


async def form_files(form: FormData, field: str, *, required: bool = True) -> list[Upload]:
    """The files under `field`, read into memory (large ones were spooled to disk by the parser)."""
    items = form.getlist(field)
    if required and not items:
        raise InvalidRequest("missing_file", f"no file in the multipart field '{field}'")
    uploads = []
    for i, item in enumerate(items):
        if not isinstance(item, UploadFile):
            raise InvalidRequest("not_a_file", f"multipart field '{field}' must hold files, not text")
        uploads.append(Upload(safe_name(item.filename, i), await item.read(), item.content_type or ""))
    return uploads


async def probe_files(form: FormData) -> list[Upload]:
    """The probes of a search or verification: the field `files`, as on every route; the field `file`
    (its name before searches took several probes) is still read, after them."""
    return await form_files(form, "files", required=False) + await form_files(form, "file", required=False)


VIDEO_FIELDS: dict[str, Any] = {
    name: {**schema, "description": VideoParams.model_fields[name].description}
    for name, schema in (
        ("method", {"type": "string", "enum": ["bgsub", "onnx"], "default": "bgsub"}),
        ("track", {"type": "integer", "minimum": 0}),
        ("strip", {"type": "boolean", "default": False}),
    )
}


def video_options(form: FormData, *, thumbnails: bool = False) -> VideoOptions:
    """The video fields of a multipart form (422 `validation_error` when malformed)."""
    params = validate_model(VideoParams, {k: form[k] for k in VIDEO_FIELDS if k in form})
    return VideoOptions(params.method, params.track, params.strip, thumbnails)


def json_uploads(sequences: list[SequenceJSON]) -> list[Upload]:
    """Base64 .npy entries -> uploads; the .npy format is forced whatever the name says."""
    uploads = []
    for i, entry in enumerate(sequences):
        name = safe_name(entry.name, i)
        uploads.append(Upload(name if name.lower().endswith(".npy") else f"{name}.npy", entry.npy_b64))
    return uploads


def form_json(form: FormData, field: str) -> Any:
    """A multipart text field holding JSON (None when absent)."""
    value = form.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest("invalid_field", f"multipart field '{field}' must be text (JSON), not a file")
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidRequest("invalid_json", f"multipart field '{field}' is not valid JSON: {exc}") from None


def form_texts(form: FormData, field: str) -> list[str] | None:
    values = form.getlist(field)
    if not values:
        return None
    if not all(isinstance(v, str) for v in values):
        raise InvalidRequest("invalid_field", f"multipart field '{field}' must be text, not a file")
    return [str(v) for v in values]


def multipart_schema(files_field: str, fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """The OpenAPI schema of a multipart body with one repeatable file field."""
    properties = {files_field: {"type": "array", "items": {"type": "string", "format": "binary"}}, **fields}
    return {"type": "object", "properties": properties, "required": required}


def request_body(json_model: type[BaseModel], multipart: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` documenting a route that accepts both encodings."""
    ref = {"$ref": f"#/components/schemas/{json_model.__name__}"}
    return {
        "requestBody": {
            "required": True,
            "content": {MULTIPART: {"schema": multipart}, JSON: {"schema": ref}},
        }
    }

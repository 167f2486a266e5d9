"""Request bodies that carry sequences: multipart uploads or JSON with base64 .npy, read into `Upload`s.

Multipart files may also be videos (engine/videos.py); the text fields `method`, `track` and `strip`
say how a video becomes a sequence (`video_options`).

Routes that take sequences accept both encodings, so FastAPI's own body parsing (one content type per
route) is not used there: `read_body` is the one place that branches on the content type (anything but
JSON or multipart is UnsupportedMediaType), reads the body once and validates JSON with the same pydantic
models the OpenAPI schema shows. The body size was already bounded by the middleware before any of this
reads it, and the API key checked (the dependencies run before a route reads its body).

What JSON costs is its values, not its bytes: a parser builds an object per value (~1.4 us per small
object, all of it holding the GIL, so even off the event loop it stalls every route), while a 12 MB base64
string costs ~3 ms. So a JSON body is scanned for its structure before it is parsed: at most
`MAX_JSON_VALUES` values and `MAX_JSON_CONTAINERS` objects and arrays (~20 ms of parsing at worst).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pydantic_core
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from engine import Upload, VideoOptions, safe_name
from gaitlu.schemas import MAX_SEQUENCES, SequenceJSON, VideoParams
from service.errors import InvalidRequest, UnsupportedMediaType
from service.settings import Settings

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
JSON = "application/json"
MULTIPART = "multipart/form-data"
MAX_FORM_FIELDS = 256
MAX_JSON_VALUES = 2**17  # a 65536-float embedding (MAX_EMBEDDING_FLOATS) with room to spare
MAX_JSON_CONTAINERS = 8 * MAX_SEQUENCES  # objects and arrays: each sequence's own and its metadata's
_SCAN_WINDOW = 1 << 20  # bytes counted per call: the event loop gets the GIL between calls


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
    return await asyncio.to_thread(parse_json, await request.body(), model)


def parse_json(body: bytes, model: type[M]) -> M:
    """422 for invalid JSON, including the non-JSON tokens NaN and Infinity (pydantic's own JSON parsing
    accepts them, and such a float has no meaning in any field here), and for a body with more values
    than any request needs (`json_too_complex`)."""
    try:
        data = load_json(body)
    except ValueError as exc:
        error = {"type": "json_invalid", "loc": ("body",), "msg": f"Invalid JSON: {exc}", "input": ""}
        raise RequestValidationError([error]) from None
    return validate_model(model, data)


def load_json(text: bytes) -> Any:
    """Bounded JSON: the structure is counted before anything is parsed (InvalidRequest beyond the
    bounds); ValueError for invalid JSON, saying so for NaN and Infinity."""
    if len(text) > MAX_JSON_CONTAINERS:  # a shorter text cannot be over either bound
        values, containers = _count(text, b",") + 1, _count(text, b"{") + _count(text, b"[")
        if values > MAX_JSON_VALUES or containers > MAX_JSON_CONTAINERS:
            raise InvalidRequest(
                "json_too_complex",
                f"the JSON holds about {values} values in {containers} objects and arrays; the limits are "
                f"{MAX_JSON_VALUES} and {MAX_JSON_CONTAINERS} (send many sequences as multipart files)",
            )
    try:
        return pydantic_core.from_json(text, allow_inf_nan=False)
    except ValueError as exc:
        try:
            pydantic_core.from_json(text)  # only on a failure: was it NaN or Infinity?
        except ValueError:
            raise exc from None
        raise ValueError("NaN and Infinity are not JSON numbers") from None


def _count(text: bytes, token: bytes) -> int:
    """How often the one-byte `token` occurs (inside strings too: an upper bound on the structure)."""
    return sum(text.count(token, at, at + _SCAN_WINDOW) for at in range(0, len(text), _SCAN_WINDOW))


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
    from_json: Callable[[M, Settings], T],
    from_form: Callable[[FormData], Awaitable[T]],
) -> T:
    """A body that may be either encoding: JSON, validated by `json_model`, goes to `from_json`; a
    multipart form to `from_form` (its spooled files are closed when it returns)."""
    if require_media_type(request, MULTIPART, JSON) == JSON:
        return from_json(await read_json(request, json_model), settings)
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


def form_fields(model: type[BaseModel], *, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The OpenAPI properties of `model`'s fields as multipart text fields: the JSON schema pydantic
    validates them with (limits, enums, defaults, descriptions), so what is documented is what is
    enforced. An optional field is documented as its type (an absent form field is None)."""
    properties: dict[str, Any] = model.model_json_schema()["properties"]
    fields = {}
    for name, schema in properties.items():
        if name in exclude:
            continue
        schema = dict(schema)
        options = [o for o in schema.pop("anyOf", []) if o.get("type") != "null"]
        if len(options) > 1:
            raise TypeError(f"{model.__name__}.{name}: a form field needs one type, not {options}")
        schema = {**(options[0] if options else {}), **schema}
        schema.pop("title", None)
        if schema.get("default", 0) is None:
            del schema["default"]
        fields[name] = schema
    return fields


def form_required(model: type[BaseModel]) -> list[str]:
    """The fields `model` requires, as its JSON schema lists them."""
    required: list[str] = model.model_json_schema().get("required", [])
    return required


VIDEO_FIELDS = form_fields(VideoParams)


def video_options(form: FormData, *, thumbnails: bool = False) -> VideoOptions:
    """The video fields of a multipart form (422 `validation_error` when malformed)."""
    params = validate_model(VideoParams, {k: form[k] for k in VIDEO_FIELDS if k in form})
    return VideoOptions(params.method, params.track, params.strip, thumbnails)


def json_uploads(sequences: Sequence[SequenceJSON], settings: Settings) -> list[Upload]:
    """Base64 .npy entries -> uploads, counted first; the .npy format is forced whatever the name says."""
    check_count(len(sequences), settings)
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
        return load_json(value.encode())
    except ValueError as exc:
        raise InvalidRequest("invalid_json", f"multipart field '{field}' is not valid JSON: {exc}") from None


def form_texts(form: FormData, field: str) -> list[str] | None:
    values = form.getlist(field)
    if not values:
        return None
    if not all(isinstance(v, str) for v in values):
        raise InvalidRequest("invalid_field", f"multipart field '{field}' must be text, not a file")
    return [str(v) for v in values]


def multipart_schema(files_field: str, fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """The OpenAPI schema of a multipart body with one repeatable file field (always required)."""
    properties = {files_field: {"type": "array", "items": {"type": "string", "format": "binary"}}, **fields}
    return {"type": "object", "properties": properties, "required": [files_field, *required]}


def request_body(json_model: type[BaseModel], multipart: dict[str, Any] | None = None) -> dict[str, Any]:
    """`openapi_extra` documenting a body read by hand: JSON, and multipart when the route accepts both."""
    content: dict[str, Any] = {JSON: {"schema": {"$ref": f"#/components/schemas/{json_model.__name__}"}}}
    if multipart is not None:
        content = {MULTIPART: {"schema": multipart}, **content}
    return {"requestBody": {"required": True, "content": content}}

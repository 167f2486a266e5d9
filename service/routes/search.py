"""POST /search: rank a gallery's subjects against a sequence or video (multipart), a sequence or an
embedding (JSON)."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from starlette.datastructures import FormData

from engine import Upload, VideoOptions
from gaitlu.schemas import SearchParams, SearchRequest, SearchResponse
from service.deps import EngineDep, ReadAccess, SettingsDep
from service.errors import InvalidRequest
from service.public import hit_public, timings_public, track_public
from service.settings import Settings
from service.uploads import (
    VIDEO_FIELDS,
    form_files,
    json_uploads,
    multipart_schema,
    read_body,
    request_body,
    validate_model,
    video_options,
)

router = APIRouter(tags=["search"], dependencies=[ReadAccess])

_FIELDS = {
    "gallery": {"type": "string", "maxLength": 64},
    "k": {"type": "integer", "minimum": 1, "default": 5},
    "threshold": {"type": "number", "minimum": -1, "maximum": 1},
    **VIDEO_FIELDS,
}
_BODY = request_body(SearchRequest, multipart_schema("file", _FIELDS, ["file", "gallery"]))

Query = tuple[SearchParams, Upload | np.ndarray, VideoOptions]


def _from_json(body: SearchRequest, settings: Settings) -> Query:
    if body.sequence is not None:
        return body, json_uploads([body.sequence], settings)[0], VideoOptions()
    return body, np.asarray(body.embedding, dtype=np.float32), VideoOptions()


async def _from_form(form: FormData) -> Query:
    fields = {key: form[key] for key in ("gallery", "k", "threshold") if key in form}
    params = validate_model(SearchParams, fields)
    options = video_options(form)
    files = await form_files(form, "file")
    if len(files) != 1:
        raise InvalidRequest("one_file", f"search takes one sequence in the field 'file', got {len(files)}")
    return params, files[0], options


@router.post("/search", response_model=SearchResponse, openapi_extra=_BODY)
async def search(request: Request, engine: EngineDep, settings: SettingsDep) -> SearchResponse:
    """The top-k subjects of `gallery`, best first; each subject scores its best sequence's similarity."""
    params, query, options = await read_body(request, settings, SearchRequest, _from_json, _from_form)
    hits, embedded = await engine.search(params.gallery, query, params.k, params.threshold, options)
    data = [hit_public(hit) for hit in hits]
    return SearchResponse(
        gallery=params.gallery,
        model_hash=engine.model_hash,
        k=params.k,
        threshold=params.threshold,
        data=data,
        count=len(data),
        timings=timings_public([embedded] if embedded is not None else []),
        track=track_public(embedded.video) if embedded is not None else None,
    )

"""POST /search: rank a gallery's subjects against a sequence or video (multipart), a sequence or an
embedding (JSON)."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request

from service.deps import EngineDep, ReadAccess, SettingsDep
from service.engine import Upload
from service.errors import ServiceError
from service.schemas import HitPublic, SearchParams, SearchRequest, SearchResponse, Timings
from service.settings import Settings
from service.uploads import (
    JSON,
    MULTIPART,
    VIDEO_FIELDS,
    form_files,
    json_uploads,
    multipart_schema,
    open_form,
    read_json,
    request_body,
    require_media_type,
    validate_model,
    video_options,
)
from service.videos import VideoOptions, track_public

router = APIRouter(tags=["search"], dependencies=[ReadAccess])

_FIELDS = {
    "gallery": {"type": "string", "maxLength": 64},
    "k": {"type": "integer", "minimum": 1, "default": 5},
    "threshold": {"type": "number", "minimum": -1, "maximum": 1},
    **VIDEO_FIELDS,
}
_BODY = request_body(SearchRequest, multipart_schema("file", _FIELDS, ["file", "gallery"]))


async def _read_query(
    request: Request, settings: Settings
) -> tuple[SearchParams, Upload | np.ndarray, VideoOptions]:
    if require_media_type(request, MULTIPART, JSON) == JSON:
        body = await read_json(request, SearchRequest)
        if body.sequence is not None:
            return body, json_uploads([body.sequence])[0], VideoOptions()
        return body, np.asarray(body.embedding, dtype=np.float32), VideoOptions()
    async with open_form(request, settings) as form:
        fields = {key: form[key] for key in ("gallery", "k", "threshold") if key in form}
        params = validate_model(SearchParams, fields)
        options = video_options(form)
        files = await form_files(form, "file")
    if len(files) != 1:
        raise ServiceError(
            422, "one_file", f"search takes one sequence in the field 'file', got {len(files)}"
        )
    return params, files[0], options


@router.post("/search", response_model=SearchResponse, openapi_extra=_BODY)
async def search(request: Request, engine: EngineDep, settings: SettingsDep) -> SearchResponse:
    """The top-k subjects of `gallery`, best first; each subject scores its best sequence's similarity."""
    params, query, options = await _read_query(request, settings)
    hits, embedded = await engine.search(params.gallery, query, params.k, params.threshold, options)
    timings = Timings()
    if embedded is not None:
        timings = Timings(
            decode_ms=embedded.decode_ms, queue_ms=embedded.queue_ms, inference_ms=embedded.inference_ms
        )
    data = [HitPublic(subject_id=h.subject_id, score=h.score, sequence_id=h.sequence_id) for h in hits]
    return SearchResponse(
        gallery=params.gallery,
        model_hash=engine.model_hash,
        k=params.k,
        threshold=params.threshold,
        data=data,
        count=len(data),
        timings=timings,
        track=track_public(embedded.video) if embedded is not None else None,
    )

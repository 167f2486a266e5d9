"""POST /embed: sequences or videos in (multipart files, or base64 .npy JSON), embeddings out."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.deps import EngineDep, ReadAccess, SettingsDep
from service.schemas import EmbeddingPublic, EmbedRequest, EmbedResponse, Timings
from service.uploads import (
    JSON,
    MULTIPART,
    VIDEO_FIELDS,
    check_count,
    form_files,
    json_uploads,
    multipart_schema,
    open_form,
    read_json,
    request_body,
    require_media_type,
    video_options,
)
from service.videos import VideoOptions, track_public

router = APIRouter(tags=["embed"], dependencies=[ReadAccess])

_BODY = request_body(EmbedRequest, multipart_schema("files", VIDEO_FIELDS, ["files"]))


@router.post("/embed", response_model=EmbedResponse, openapi_extra=_BODY)
async def embed(request: Request, engine: EngineDep, settings: SettingsDep) -> EmbedResponse:
    """Embed one or more sequences (any format the loader reads: .pkl, .npy, .npz, .png, .zip of PNGs) or
    videos (.mp4, .avi, .mkv, .mov, .webm: one person's silhouettes are extracted, see `track`)."""
    options = VideoOptions()
    if require_media_type(request, MULTIPART, JSON) == JSON:
        uploads = json_uploads((await read_json(request, EmbedRequest)).sequences)
    else:
        async with open_form(request, settings) as form:
            uploads = await form_files(form, "files")
            options = video_options(form)
    check_count(len(uploads), settings)
    results = await engine.embed(uploads, options)
    layout = engine.layout
    data = [
        EmbeddingPublic(
            name=r.name,
            embedding=r.vector.tolist(),
            frames=r.frames,
            timings=Timings(decode_ms=r.decode_ms, queue_ms=r.queue_ms, inference_ms=r.inference_ms),
            track=track_public(r.video),
        )
        for r in results
    ]
    return EmbedResponse(
        model_hash=engine.model_hash,
        parts=layout.parts,
        channels=layout.channels,
        dim=layout.size,
        data=data,
        count=len(data),
    )

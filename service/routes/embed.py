"""POST /embed: sequences or videos in (multipart files, or base64 .npy JSON), embeddings out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.datastructures import FormData

from engine import Upload, VideoOptions
from gaitlu.schemas import EmbeddingPublic, EmbedRequest, EmbedResponse
from service.deps import EngineDep, ReadAccess, SettingsDep
from service.public import timings_public, track_public
from service.settings import Settings
from service.uploads import (
    VIDEO_FIELDS,
    check_count,
    form_files,
    json_uploads,
    multipart_schema,
    read_body,
    request_body,
    video_options,
)

router = APIRouter(tags=["embed"], dependencies=[ReadAccess])

_BODY = request_body(EmbedRequest, multipart_schema("files", VIDEO_FIELDS, []))


def _from_json(body: EmbedRequest, settings: Settings) -> tuple[list[Upload], VideoOptions]:
    return json_uploads(body.sequences, settings), VideoOptions()


async def _from_form(form: FormData) -> tuple[list[Upload], VideoOptions]:
    return await form_files(form, "files"), video_options(form)


@router.post("/embed", response_model=EmbedResponse, openapi_extra=_BODY)
async def embed(request: Request, engine: EngineDep, settings: SettingsDep) -> EmbedResponse:
    """Embed one or more sequences (any format the loader reads: .pkl, .npy, .npz, .png, .zip of PNGs) or
    videos (.mp4, .avi, .mkv, .mov, .webm: one person's silhouettes are extracted, see `track`)."""
    uploads, options = await read_body(request, settings, EmbedRequest, _from_json, _from_form)
    check_count(len(uploads), settings)
    results = await engine.embed(uploads, options)
    layout = engine.layout
    data = [
        EmbeddingPublic(
            name=r.name,
            embedding=r.vector.tolist(),
            frames=r.frames,
            timings=timings_public([r]),
            track=track_public(r.video),
        )
        for r in results
    ]
    return EmbedResponse(
        model_hash=engine.model_hash,
        parts=layout.parts,
        channels=layout.part_dim,
        dim=layout.size,
        data=data,
        count=len(data),
    )

"""POST /sequences/preview: an uploaded sequence as the model sees it, as pictures (the web page's view).

The upload goes through the same path as /embed (body limit, decoded-size and frame limits, safe
unpickling, the decode workers); nothing is embedded or stored.
"""

from __future__ import annotations

from anyio.to_thread import run_sync
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from gallery.previews import sequence_preview
from service.deps import EngineDep, ReadAccess, SettingsDep
from service.errors import ServiceError
from service.uploads import MULTIPART, form_files, multipart_schema, open_form, require_media_type

router = APIRouter(prefix="/sequences", tags=["web"], dependencies=[ReadAccess])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {MULTIPART: {"schema": multipart_schema("file", {}, ["file"])}},
    }
}


class PreviewResponse(BaseModel):
    name: str
    frames: int = Field(description="Model frames after alignment (empty frames dropped).")
    height: int
    width: int
    data: list[str] = Field(description="One PNG data URI per frame, in order.")
    gei: str = Field(description="PNG data URI of the Gait Energy Image (the mean frame).")
    decode_ms: float


@router.post("/preview", response_model=PreviewResponse, openapi_extra=_BODY)
async def preview(request: Request, engine: EngineDep, settings: SettingsDep) -> PreviewResponse:
    """The decoded, aligned (64 x 44) frames of one sequence and its GEI, as PNG data URIs."""
    require_media_type(request, MULTIPART)
    async with open_form(request, settings) as form:
        files = await form_files(form, "file")
    if len(files) != 1:
        raise ServiceError(
            422, "one_file", f"preview takes one sequence in the field 'file', got {len(files)}"
        )
    [decoded] = await engine.decode(files)
    shown = await run_sync(sequence_preview, decoded.frames)
    _, height, width = decoded.frames.shape  # (T, 64, 44)
    return PreviewResponse(
        name=decoded.name,
        frames=len(decoded.frames),
        height=height,
        width=width,
        data=shown.frames,
        gei=shown.gei,
        decode_ms=decoded.decode_ms,
    )

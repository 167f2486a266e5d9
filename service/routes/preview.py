"""POST /sequences/preview: an uploaded sequence or video as the model sees it, as pictures (the web page).

The upload goes through the same path as /embed (body limit, decoded-size and frame limits, safe
unpickling, the decode workers; for a video the video limits and workers); nothing is embedded or
stored. A video also answers which track was taken and a few of its frames, downscaled with the track's
box drawn, each paired with its silhouette, so people can check the extraction by eye.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from engine import VideoTrack
from gaitlu.schemas import VideoTrackPublic
from service.deps import EngineDep, ReadAccess, SettingsDep
from service.errors import InvalidRequest
from service.presentation import SequencePreview, sequence_preview
from service.public import track_public
from service.uploads import (
    MULTIPART,
    VIDEO_FIELDS,
    form_files,
    multipart_schema,
    open_form,
    require_media_type,
    video_options,
)

router = APIRouter(prefix="/sequences", tags=["web"], dependencies=[ReadAccess])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {MULTIPART: {"schema": multipart_schema("files", VIDEO_FIELDS, [])}},
    }
}


class VideoFramePublic(BaseModel):
    frame: int = Field(description="Video frame index.")
    image: str = Field(description="JPEG data URI, 160 px wide, the track's box drawn.")
    silhouette: int = Field(description="Index in `data` of this frame's silhouette.")


class VideoPreviewPublic(BaseModel):
    track: VideoTrackPublic
    frames: list[VideoFramePublic] = Field(description="Up to 8 frames spread over the track.")


class PreviewResponse(BaseModel):
    name: str
    frames: int = Field(description="Model frames after alignment (empty frames dropped).")
    height: int
    width: int
    data: list[str] = Field(description="One PNG data URI per frame, in order.")
    gei: str = Field(description="PNG data URI of the Gait Energy Image (the mean frame).")
    decode_ms: float
    video: VideoPreviewPublic | None = Field(None, description="For a video: the track and its frames.")


def _video_preview(video: VideoTrack | None, shown: SequencePreview) -> VideoPreviewPublic | None:
    if video is None:
        return None
    frames = [
        VideoFramePublic(frame=t.frame, image=image, silhouette=t.position)
        for t, image in zip(video.thumbnails, shown.thumbnails, strict=True)
    ]
    return VideoPreviewPublic(track=track_public(video), frames=frames)


@router.post("/preview", response_model=PreviewResponse, openapi_extra=_BODY)
async def preview(request: Request, engine: EngineDep, settings: SettingsDep) -> PreviewResponse:
    """The decoded, aligned (64 x 44) frames of one sequence or video and its GEI, as PNG data URIs."""
    require_media_type(request, MULTIPART)
    async with open_form(request, settings) as form:
        files = await form_files(form, "files")
        options = video_options(form, thumbnails=True)
    if len(files) != 1:
        raise InvalidRequest("one_file", f"preview takes one sequence in the field 'files', got {len(files)}")
    [decoded] = await engine.decode(files, options)
    shown = await asyncio.to_thread(sequence_preview, decoded.frames, decoded.video)
    _, height, width = decoded.frames.shape  # (T, 64, 44)
    return PreviewResponse(
        name=decoded.name,
        frames=len(decoded.frames),
        height=height,
        width=width,
        data=shown.frames,
        gei=shown.gei,
        decode_ms=decoded.decode_ms,
        video=_video_preview(decoded.video, shown),
    )

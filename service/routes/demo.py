"""GET /demo/sequences: a few sequence files to try the service with, from DATA_DIR/demo (service/demo.py)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel

from gaitlu.errors import SequenceError
from service.demo import demo_folder, ensure_demo, find_demo
from service.deps import ReadAccess, SettingsDep
from service.errors import ResourceNotFound, Unavailable

router = APIRouter(prefix="/demo/sequences", tags=["web"], dependencies=[ReadAccess])


class DemoSequencePublic(BaseModel):
    name: str
    size_bytes: int


class DemoSequencesPublic(BaseModel):
    data: list[DemoSequencePublic]
    count: int


@router.get("", response_model=DemoSequencesPublic)
async def list_demo_sequences(settings: SettingsDep) -> DemoSequencesPublic:
    """The demo files; the first call renders synthetic walkers if the folder holds none (~0.5 s)."""
    try:
        files = await asyncio.to_thread(ensure_demo, demo_folder(settings.data_dir))
    except (OSError, SequenceError) as exc:
        raise Unavailable("demo_unavailable", f"cannot prepare the demo sequences: {exc}") from None
    data = [DemoSequencePublic(name=f.name, size_bytes=f.size_bytes) for f in files]
    return DemoSequencesPublic(data=data, count=len(data))


@router.get(
    "/{name}", response_class=FileResponse, responses={200: {"content": {"application/octet-stream": {}}}}
)
async def get_demo_sequence(name: str, settings: SettingsDep) -> FileResponse:
    """One demo file, as it would be uploaded."""
    found = await asyncio.to_thread(find_demo, demo_folder(settings.data_dir), name)
    if found is None:
        raise ResourceNotFound(f"no demo sequence {name!r} (GET /demo/sequences lists them)")
    return FileResponse(found.path, media_type="application/octet-stream", filename=found.name)

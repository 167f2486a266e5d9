"""The web page: GET / and GET /static/{name}, served without an API key.

They hold no data: every call the page makes for data sends the key the user typed in (X-API-Key).
The assets are a fixed set of files in service/static, looked up by exact name (no paths are built from
the request); the Content-Security-Policy keeps the page on this origin, so it fetches nothing from the
internet, and images may only be this origin's or data: URIs (frames and GEIs).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from service.errors import ResourceNotFound

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parents[1] / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
_ASSETS = {p.name: p for p in STATIC.iterdir() if p.suffix in _TYPES}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _file(name: str) -> FileResponse:
    path = _ASSETS.get(name)
    if path is None:
        raise ResourceNotFound(f"no static file {name!r}")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=_HEADERS)


@router.get("/")
async def page() -> FileResponse:
    return _file("index.html")


@router.get("/static/{name}")
async def asset(name: str) -> FileResponse:
    return _file(name)

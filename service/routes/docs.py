"""GET /docs: Swagger UI served from this server, so the API reference works with no internet.

FastAPI's own /docs loads Swagger UI from a CDN and is blank on an air-gapped site. Here its assets come
from the installed `swagger-ui-bundle-v2` package (Apache-2.0, Swagger UI 5: it renders OpenAPI 3.1),
looked up by exact name; the page's Content-Security-Policy keeps it on this origin (Swagger UI's
online validator is switched off too). ReDoc has no local copy and is not served.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from service.errors import ResourceNotFound

router = APIRouter(include_in_schema=False)

ASSETS = Path(swagger_ui_bundle.swagger_ui_path)
_TYPES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
PREFIX = "/docs/assets"
CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; frame-ancestors 'none'"
)  # Swagger UI starts from an inline script and sets inline styles: nothing may come from elsewhere
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}


@router.get("/docs")
async def docs() -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="gaitlu API",
        swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{PREFIX}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},  # else it sends the schema's URL to swagger.io
    )
    page.headers.update(_HEADERS)
    return page


@router.get(PREFIX + "/{name}")
async def asset(name: str) -> FileResponse:
    if name not in _TYPES:
        raise ResourceNotFound(f"no documentation asset {name!r}")
    return FileResponse(ASSETS / name, media_type=_TYPES[name], headers=_HEADERS)

"""The FastAPI app factory: `create_app(settings)`; the lifespan starts and stops the engine, the audit
store and the galleries' retention sweep."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from engine import Engine
from gaitlu import schemas
from gaitlu.embedding import Embedder
from service.auditing import Auditor
from service.deps import KeyRing
from service.errors import ERROR_RESPONSES, install_error_handlers
from service.metrics import Metrics
from service.middleware import (
    AdmissionMiddleware,
    BodyLimitMiddleware,
    BrowserGuardMiddleware,
    RequestContextMiddleware,
)
from service.retention import sweep_forever
from service.routes import ROUTERS
from service.settings import Settings

# Bodies read by hand (routes that take multipart or JSON): listed so the schema can reference them.
_MANUAL_BODIES = (
    schemas.EmbedRequest,
    schemas.SearchRequest,
    schemas.VerifyRequest,
    schemas.EnrollRequest,
    schemas.GalleryCreate,
    schemas.GalleryUpdate,
    schemas.ReviewRequest,
)
_EXPOSED = ["X-Request-ID", "X-Queue-Time-Ms", "X-Inference-Time-Ms", "Retry-After"]


def create_app(settings: Settings, *, embedder: Embedder | None = None) -> FastAPI:
    """The service app; `embedder` replaces the artifact's runtime (tests, embedding in other apps)."""
    metrics = Metrics()
    engine = Engine(settings.engine_settings(), embedder=embedder, metrics=metrics)
    auditor = Auditor(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await auditor.start()
        await engine.start()
        sweeper = asyncio.create_task(sweep_forever(engine, auditor), name="gallery-retention")
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await engine.stop()
            await auditor.stop()

    app = FastAPI(
        title="gaitlu",
        summary="Gait embeddings and gallery search",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        docs_url=None,
        redoc_url=None,
    )  # fmt: skip  /docs: routes/docs.py
    app.state.settings, app.state.engine, app.state.metrics = settings, engine, metrics
    app.state.keys, app.state.auditor = KeyRing(settings), auditor
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes, metrics=metrics)
    app.add_middleware(AdmissionMiddleware, settings=settings, metrics=metrics)
    app.add_middleware(BrowserGuardMiddleware, settings=settings, metrics=metrics)  # inside CORS: its headers
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "X-Request-ID", "Content-Type"],
            expose_headers=_EXPOSED,
        )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)  # outermost: sees every response
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the JSON bodies of the dual-encoding routes."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in _MANUAL_BODIES:
            found = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(found.pop("$defs", {}))
            components[model.__name__] = found
        app.openapi_schema = schema
    return app.openapi_schema

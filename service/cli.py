"""`gaitlu serve`: run the HTTP service with uvicorn (wired lazily by gaitlu/cli.py).

The engine starts before the server binds, so a bad artifact, a locked data dir or an unsafe host is
reported as one `error: ...` line instead of a traceback from inside uvicorn's start-up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from service.app import create_app
from service.connections import head_deadline_protocol
from service.logs import configure_logging
from service.settings import Settings, load_settings

app = typer.Typer(add_completion=False)


@app.command("serve")
def serve(
    artifact: Annotated[Path, typer.Option("--artifact", help="Export artifact folder (`gaitlu export`).")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Folder for the gallery database.")],
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default 127.0.0.1, or GAITLU_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000, or GAITLU_PORT).")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a non-loopback address without API keys.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    backend: Annotated[
        str | None,
        typer.Option(
            help="Inference backend: auto, openvino, cpu, cuda, tensorrt, trt-plan (default auto, or "
            "GAITLU_BACKEND)."
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="auto, fp32, bf16 (OpenVINO), int8 or fp16 (default auto, or GAITLU_PRECISION)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Inference threads (default: all, or GAITLU_THREADS).")
    ] = None,
) -> None:
    """Run the HTTP service: embed, search, galleries. Other settings come from GAITLU_* variables
    (see docs/api.md): API keys, upload limits, batching, CORS."""
    settings = load_settings(
        artifact=artifact,
        data_dir=data_dir,
        host=host,
        port=port,
        insecure=insecure or None,
        backend=backend,
        precision=precision,
        threads=threads,
    )
    configure_logging(log_level)
    asyncio.run(_serve(settings, log_level))


async def _serve(settings: Settings, log_level: str) -> None:
    application = create_app(settings)
    engine, auditor = application.state.engine, application.state.auditor
    await auditor.start()  # the lifespan's starts are then no-ops
    await engine.start()
    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        log_config=None,  # our JSON logging stays in charge
        log_level=log_level,
        access_log=False,  # the request middleware logs each request with its id
        server_header=False,
        timeout_graceful_shutdown=10,
        limit_concurrency=settings.max_connections,  # connections beyond get uvicorn's own 503
        # slow request heads are cut, large ones refused (431)
        http=head_deadline_protocol(
            settings.header_timeout_s, settings.max_head_bytes, application.state.metrics
        ),
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        await engine.stop()
        await auditor.stop()

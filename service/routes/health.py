"""Probes and metrics: /healthz (the process answers), /readyz (the model answers), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from engine import NotReady
from gaitlu.schemas import Health, Readiness
from service.deps import EngineDep, ReadAccess

router = APIRouter(tags=["probes"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Alive: the process serves requests (it may still be loading or failing)."""
    return Health()


@router.get("/readyz", response_model=Readiness)
async def readyz(engine: EngineDep) -> Readiness:
    """Ready: a check sequence goes through the batcher (ahead of its queue) and the runtime and comes
    back as at start-up, and the decode workers are not all stuck. Not ready otherwise (NotReady, saying
    why), also after an inference failure until a check succeeds again."""
    problem = await engine.check_ready()
    if problem is not None:
        raise NotReady(problem)
    runtime = engine.runtime
    return Readiness(model_hash=engine.model_hash, backend=runtime.backend, precision=runtime.precision)


@router.get("/metrics", dependencies=[ReadAccess], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format. Needs read access when API keys are configured (it names galleries).
    Rendered on the event loop from figures in memory: it takes no lock and no thread."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

"""GET /model: the running model's identity, embedding layout and score calibration (what FARs mean)."""

from __future__ import annotations

from fastapi import APIRouter

from gaitlu.schemas import ModelPublic
from service.deps import EngineDep, ReadAccess
from service.public import calibration_public

router = APIRouter(tags=["search"], dependencies=[ReadAccess])


@router.get("/model", response_model=ModelPublic)
async def model(engine: EngineDep) -> ModelPublic:
    """The model behind every score: its hash, layout and, once `gaitlu calibrate` has measured it, the
    calibration its FARs come from (data set, thresholds at FAR 1e-2, 1e-3, 1e-4 and their TAR)."""
    layout, calibration, runtime = engine.layout, engine.calibration, engine.runtime
    return ModelPublic(
        model_hash=engine.model_hash,
        parts=layout.parts,
        channels=layout.part_dim,
        dim=layout.size,
        backend=runtime.backend,
        precision=runtime.precision,
        backend_reason=runtime.reason,
        calibration=None if calibration is None else calibration_public(calibration),
    )

"""GET /erasures: the galleries' erasure log, to bring exports made before an erasure in step with it.

Every deletion of a subject, a sequence or a gallery, and every retention sweep that erased something,
is one entry: the gallery, the sequence ids erased (none for a gallery: all it held), when and why.
`gaitlu galleries erasures --out FILE` saves it and `gaitlu galleries erase EXPORT --erasures FILE`
applies it (docs/privacy.md). Full API keys only, as the audit trail: it lists who was erased.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from gaitlu.schemas import ErasurePublic, ErasuresPublic
from service.deps import EngineDep, WriteAccess

router = APIRouter(prefix="/erasures", tags=["galleries"], dependencies=[WriteAccess])


@router.get("", response_model=ErasuresPublic)
async def list_erasures(
    engine: EngineDep,
    gallery: Annotated[str | None, Query(max_length=64, description="Of this gallery only.")] = None,
    since: Annotated[
        AwareDatetime | None, Query(description="From this time (inclusive, with offset).")
    ] = None,
) -> ErasuresPublic:
    """The erasure log, oldest first; a deleted gallery's entries stay listed."""
    data = [
        ErasurePublic(
            gallery=e.gallery,
            action=e.action,
            time=e.time,
            subject_id=e.subject_id,
            sequence_ids=list(e.sequence_ids),
        )
        for e in await engine.erasures(gallery, since)
    ]
    return ErasuresPublic(data=data, count=len(data))

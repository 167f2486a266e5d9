"""The audit trail: GET /audit (filtered, paged), GET /audit/{id}, POST /audit/{id}/review.

Full API keys only: a read-only key gets 403 (the trail says who searched whom). A review records that
a key confirmed or rejected a match; a match is confirmed once two distinct keys confirmed it (AI Act
Article 14(5): verified by two people), and the same key reviewing it twice is 409 `already_reviewed`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, status
from pydantic import AwareDatetime

from audit import AuditQuery, AuditStore, Record, ReviewState
from audit.store import REVIEWABLE
from gaitlu.schemas import (
    AuditAction,
    AuditDecision,
    AuditRecordPublic,
    AuditRecordsPublic,
    ReviewRequest,
    ReviewResponse,
)
from gallery.protocol import MAX_OFFSET  # the largest integer SQLite binds: record ids and offsets
from service.auditing import AuditorDep, caller, record_public, review_public
from service.context import request_id
from service.deps import WriteAccess
from service.uploads import JSON, read_json, request_body, require_media_type

router = APIRouter(prefix="/audit", tags=["audit"], dependencies=[WriteAccess])
RecordId = Annotated[int, Path(ge=1, le=MAX_OFFSET)]


def _reviewable(records: list[Record]) -> list[int]:
    return [r.id for r in records if (r.action, r.decision) in REVIEWABLE]


@router.get("", response_model=AuditRecordsPublic)
async def list_records(
    auditor: AuditorDep,
    since: Annotated[
        AwareDatetime | None, Query(description="From this time (inclusive, with offset).")
    ] = None,
    until: Annotated[AwareDatetime | None, Query(description="Before this time (exclusive).")] = None,
    gallery: Annotated[str | None, Query(max_length=64)] = None,
    subject_id: Annotated[
        str | None, Query(max_length=128, description="Records about this subject (enrolled, hit, ...).")
    ] = None,
    action: Annotated[list[AuditAction] | None, Query(description="Any of these (repeat the field).")] = None,
    key_id: Annotated[str | None, Query(max_length=64)] = None,
    decision: AuditDecision | None = None,
    order: Literal["asc", "desc"] = "asc",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditRecordsPublic:
    """One page of audit records by id (oldest first, or `order=desc`); `count` is how many match."""
    query = AuditQuery(
        since=since,
        until=until,
        gallery=gallery,
        subject_id=subject_id,
        actions=tuple(action or ()),
        key_id=key_id,
        decision=decision,
        offset=offset,
        limit=limit,
        newest_first=order == "desc",
    )

    def read(store: AuditStore) -> tuple[list[Record], int, dict[int, ReviewState]]:
        records, total = store.query(query)
        return records, total, store.review_states(_reviewable(records))

    records, total, states = await auditor.read(read)
    data = [record_public(r, states.get(r.id)) for r in records]
    return AuditRecordsPublic(data=data, count=total, offset=offset, limit=limit)


@router.get("/{record_id}", response_model=AuditRecordPublic)
async def get_record(record_id: RecordId, auditor: AuditorDep) -> AuditRecordPublic:
    """One record; for a match, with its review state."""

    def read(store: AuditStore) -> tuple[Record, ReviewState | None]:
        record = store.get(record_id)
        return record, store.review_states(_reviewable([record])).get(record.id)

    record, state = await auditor.read(read)
    return record_public(record, state)


@router.post(
    "/{record_id}/review",
    status_code=status.HTTP_201_CREATED,
    response_model=ReviewResponse,
    openapi_extra=request_body(ReviewRequest),
)
async def review(record_id: RecordId, request: Request, auditor: AuditorDep) -> ReviewResponse:
    """Confirm or reject a match (a search's `match` or a verify's `verified` record) as the caller's
    key. Confirmed once two distinct keys confirmed it; rejected once one rejects it. The review is an
    audit record itself. 409 `already_reviewed` for the same key twice, `not_reviewable` for a record
    that is not a match; 404 for no such record."""
    require_media_type(request, JSON)
    body = await read_json(request, ReviewRequest)
    who, rid = caller(request), request_id.get()
    record, state = await auditor.write(
        lambda store: store.review(record_id, body.verdict, key=who, request_id=rid, note=body.note)
    )
    return ReviewResponse(record=record_public(record), review=review_public(state))

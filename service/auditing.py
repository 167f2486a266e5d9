"""The service's side of the audit trail (audit/): what each route records, and the store's lifecycle.

Routes record after their action succeeded and before they answer: a 2xx means its record is committed
(fsynced). Writes go through one thread of their own, so they queue there rather than in the pool the
gallery calls use, and the records of requests that arrive while a commit is under way are committed
together by the next one (group commit: one fsync for many requests, as a busy server needs); reads
(GET /audit) use the default pool. A record holds the key id (a hash of the API
key), digests of the inputs (sha256 of each uploaded file's bytes, or of an embedding's float32 bytes),
never the key or the data themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Annotated, TypeVar

import numpy as np
from fastapi import Depends, Request

from audit import (
    AUDIT_FILE,
    Action,
    AuditStore,
    Decision,
    Entry,
    Hit,
    Record,
    ReviewState,
    key_id,
    sha256_hex,
)
from audit.store import REQUIRED_CONFIRMATIONS
from engine import Engine, Probe, ProbeResult, Threshold, Upload, Verification
from gaitlu.schemas import AuditHitPublic, AuditRecordPublic, ReviewStatePublic
from service.context import request_id
from service.deps import KeyRing
from service.errors import answer
from service.settings import Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")
SWEEP_EVERY_S = 3600.0  # the retention sweep runs at start and then hourly


class Auditor:
    """The audit store of the service's data folder, opened by `start` (idempotent) and closed by `stop`."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.data_dir / AUDIT_FILE
        self.retention_days = settings.audit_retention_days
        self._store: AuditStore | None = None
        self._writer: ThreadPoolExecutor | None = None  # one thread: every write, in order
        self._sweeper: asyncio.Task[None] | None = None
        # Records waiting for the next commit, and the task committing them (event-loop state only).
        self._pending: list[tuple[list[Entry], asyncio.Future[list[Record]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @property
    def store(self) -> AuditStore:
        if self._store is None:
            raise RuntimeError("the audit store is used before the service started")
        return self._store

    @property
    def writer(self) -> ThreadPoolExecutor:
        if self._writer is None:
            raise RuntimeError("the audit store is used before the service started")
        return self._writer

    async def start(self) -> None:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="audit-writer")
        if self._store is None:
            loop = asyncio.get_running_loop()
            self._store = await loop.run_in_executor(self._writer, AuditStore, self.path)
        if self.retention_days and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(self.retention_days), name="audit-sweep")

    async def stop(self) -> None:
        if self._flusher is not None:  # the last records of requests still being answered
            with contextlib.suppress(Exception):
                await self._flusher
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._store is not None:
            await asyncio.get_running_loop().run_in_executor(self.writer, self._store.close)
            self._store = None
        if self._writer is not None:
            self._writer.shutdown(wait=False)
            self._writer = None

    async def write(self, work: Callable[[AuditStore], T]) -> T:
        """Run a write on the audit thread; durable when this returns."""
        store = self.store
        return await asyncio.get_running_loop().run_in_executor(self.writer, work, store)

    async def record(self, entries: Sequence[Entry]) -> list[Record]:
        """Append `entries` (in order, consecutive ids); durable when this returns. Concurrent callers
        share commits; AuditWriteFailed if theirs failed."""
        if self._store is None:  # refused here, not in the flusher
            raise RuntimeError("the audit store is used before the service started")
        future: asyncio.Future[list[Record]] = asyncio.get_running_loop().create_future()
        self._pending.append((list(entries), future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="audit-commit")
        return await asyncio.shield(future)  # a cancelled request's record is still written

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                groups = [entries for entries, _ in batch]
                try:
                    results = await loop.run_in_executor(self.writer, _append_groups, self.store, groups)
                except BaseException as exc:  # the store closed under it, or a bug: nobody waits for ever
                    for _, future in batch:
                        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                    raise
                for (_, future), result in zip(batch, results, strict=True):
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._flusher = None

    async def read(self, work: Callable[[AuditStore], T]) -> T:
        store = self.store
        return await asyncio.to_thread(work, store)

    async def _sweep_forever(self, days: int) -> None:
        while True:
            cutoff = datetime.now(UTC) - timedelta(days=days)
            try:
                await self.write(partial(AuditStore.sweep, older_than=cutoff))
            except Exception:  # logged and retried at the next sweep; the trail stays verifiable
                logger.exception("audit retention sweep failed")
            await asyncio.sleep(SWEEP_EVERY_S)


def _append_groups(store: AuditStore, groups: list[list[Entry]]) -> list[list[Record] | Exception]:
    """Each group's records, all in one transaction; if that fails, group by group, so that one bad
    group fails alone."""
    if len(groups) > 1:
        try:
            records = store.append([entry for group in groups for entry in group])
        except Exception:
            logger.warning("a group commit of %d audit writes failed: retrying them one by one", len(groups))
        else:
            out: list[list[Record] | Exception] = []
            for group in groups:
                out.append(records[: len(group)])
                records = records[len(group) :]
            return out
    results: list[list[Record] | Exception] = []
    for group in groups:
        try:
            results.append(store.append(group))
        except Exception as exc:
            results.append(exc)
    return results


async def get_auditor(request: Request) -> Auditor:
    auditor: Auditor = request.app.state.auditor
    return auditor


AuditorDep = Annotated[Auditor, Depends(get_auditor)]


# ----- what the routes record


def caller(request: Request) -> str | None:
    """The key id of the request's API key (checked already by the route's access dependency); None on a
    server without keys."""
    keys: KeyRing = request.app.state.keys
    key = request.headers.get("X-API-Key")
    return key_id(key) if keys.enabled and key else None


def digest(item: Upload | np.ndarray) -> str:
    """sha256 of an upload's bytes, or of an embedding as float32 (as a gallery stores it; an absurd one,
    refused by the search, overflows to inf here without a warning)."""
    if isinstance(item, Upload):
        return sha256_hex(item.data)
    with np.errstate(over="ignore"):
        return sha256_hex(np.ascontiguousarray(item, dtype=np.float32).tobytes())


def search_entries(
    request: Request,
    gallery: str,
    probes: Sequence[Probe],
    results: Sequence[ProbeResult],
    threshold: Threshold,
    engine: Engine,
) -> list[Entry]:
    """One record per probe: its digest, the hits returned (above the threshold when one was given) and
    the decision (match / unknown; error for a probe that could not be searched; none without a
    threshold)."""
    who, rid = caller(request), request_id.get()
    entries = []
    for probe, result in zip(probes, results, strict=True):
        hits = tuple(
            Hit(h.subject_id, h.sequence_id, h.score, engine.far("subject", h.score)) for h in result.hits
        )
        decision: Decision | None = None
        if result.error is not None:
            decision = "error"
        elif threshold.score is not None:
            decision = "match" if hits else "unknown"
        entries.append(
            Entry(
                action="search",
                key_id=who,
                request_id=rid,
                gallery=gallery,
                input_sha256=(digest(probe),),
                hits=hits,
                threshold=threshold.score,
                max_far=threshold.max_far,
                decision=decision,
                error=answer(result.error).code if result.error is not None else None,
            )
        )
    return entries


def verify_entry(
    request: Request,
    gallery: str | None,
    subject_id: str | None,
    probes: Sequence[Probe],
    checked: Verification,
) -> Entry:
    match = checked.match
    sequence_ids = (checked.sequence_id,) if checked.sequence_id is not None else ()
    return Entry(
        action="verify",
        key_id=caller(request),
        request_id=request_id.get(),
        gallery=gallery,
        subject_id=subject_id,
        sequence_ids=sequence_ids,
        input_sha256=tuple(digest(p) for p in probes),
        hits=(Hit(subject_id, checked.sequence_id, checked.score, checked.far),),
        threshold=checked.threshold.score,
        max_far=checked.threshold.max_far,
        decision=None if match is None else "verified" if match else "rejected",
    )


def change_entry(
    request: Request,
    action: Action,
    gallery: str,
    *,
    subject_id: str | None = None,
    sequence_ids: Sequence[str] = (),
    inputs: Sequence[Upload | np.ndarray] = (),
) -> Entry:
    """An enrolment, a deletion or a gallery created or deleted."""
    return Entry(
        action=action,
        key_id=caller(request),
        request_id=request_id.get(),
        gallery=gallery,
        subject_id=subject_id,
        sequence_ids=tuple(sequence_ids),
        input_sha256=tuple(digest(i) for i in inputs),
    )


# ----- what GET /audit answers


def review_public(state: ReviewState) -> ReviewStatePublic:
    return ReviewStatePublic(
        state=state.state,
        required=REQUIRED_CONFIRMATIONS,
        confirmed_by=list(state.confirmed_by),
        rejected_by=list(state.rejected_by),
    )


def record_public(record: Record, review: ReviewState | None = None) -> AuditRecordPublic:
    return AuditRecordPublic(
        id=record.id,
        time=record.time,
        action=record.action,
        key_id=record.key_id,
        request_id=record.request_id,
        gallery=record.gallery,
        subject_id=record.subject_id,
        sequence_ids=list(record.sequence_ids),
        input_sha256=list(record.input_sha256),
        hits=[
            AuditHitPublic(subject_id=h.subject_id, sequence_id=h.sequence_id, score=h.score, far=h.far)
            for h in record.hits
        ],
        threshold=record.threshold,
        max_far=record.max_far,
        decision=record.decision,
        error=record.error,
        target=record.target,
        verdict=record.verdict,
        note=record.note,
        retention=record.retention,
        prev_hash=record.prev_hash,
        hash=record.hash,
        review=review_public(review) if review is not None else None,
    )

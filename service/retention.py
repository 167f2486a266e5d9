"""The galleries' retention sweep: sequences older than their gallery's `retention_days` are erased at
start and then hourly, and each gallery's erasure is an audit record (`expire`, with the sequence ids).

`sweep_galleries(engine, auditor, now)` is one sweep at a given time: the periodic task calls it with
the clock, the tests with any time they need."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from audit import Entry
from engine import Engine
from gallery.records import Erasure
from service.auditing import SWEEP_EVERY_S, Auditor

logger = logging.getLogger(__name__)


async def sweep_galleries(engine: Engine, auditor: Auditor, now: datetime) -> list[Erasure]:
    """Erase what is past its retention at `now` and record each gallery's erasure in the audit trail."""
    erasures = await engine.sweep_expired(now)
    if erasures:
        await auditor.record(
            [Entry(action="expire", gallery=e.gallery, sequence_ids=e.sequence_ids) for e in erasures]
        )
    return erasures


async def sweep_forever(engine: Engine, auditor: Auditor) -> None:
    """The service's periodic sweep (cancelled at shutdown); a failed sweep is logged and retried."""
    while True:
        try:
            erased = await sweep_galleries(engine, auditor, datetime.now(UTC))
            for e in erased:
                logger.info("retention: %d sequences of gallery '%s' erased", len(e.sequence_ids), e.gallery)
        except Exception:
            logger.exception("gallery retention sweep failed")
        await asyncio.sleep(SWEEP_EVERY_S)

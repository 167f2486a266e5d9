"""What an honest benchmark client does with a refusal: count it, wait its Retry-After, ask again.

The service answers 429 (overloaded) or 503 (decode deadline, gallery unavailable) with a Retry-After
when it cannot take work now. A benchmark that raised on the first one measured nothing
(`benchmarks/service.py` once crashed at 32 clients); one that retried at once would be an attacker. So
every benchmark's honest clients send through `send` / `send_sync`, which return the final answer and how
many refusals came before it, and report the refusals.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

REFUSALS = (429, 503)
MAX_WAIT_S = 30.0  # a Retry-After longer than this is waited for only this long


def retry_after_s(response: httpx.Response) -> float | None:
    """Seconds to wait before asking again, when the response is a refusal that says so; else None."""
    if response.status_code not in REFUSALS:
        return None
    try:
        return min(MAX_WAIT_S, max(0.0, float(response.headers["Retry-After"])))
    except (KeyError, ValueError):
        return None


async def send(
    request: Callable[[], Awaitable[httpx.Response]], until: float | None = None
) -> tuple[httpx.Response, int]:
    """`request()` until it is not a refusal, waiting each Retry-After; (the last answer, refusals).
    With `until` (time.perf_counter), a refusal whose wait would end after it is returned as is."""
    refusals = 0
    while True:
        response = await request()
        wait = retry_after_s(response)
        if wait is None:
            return response, refusals
        refusals += 1
        if until is not None and time.perf_counter() + wait >= until:
            return response, refusals
        await asyncio.sleep(wait)


def send_sync(request: Callable[[], httpx.Response], attempts: int = 20) -> tuple[httpx.Response, int]:
    """The same for set-up requests (enrolment, gallery creation): at most `attempts` tries."""
    refusals = 0
    for _ in range(attempts - 1):
        response = request()
        wait = retry_after_s(response)
        if wait is None:
            return response, refusals
        refusals += 1
        time.sleep(wait)
    return request(), refusals


def ok(request: Callable[[], httpx.Response]) -> httpx.Response:
    """A set-up request that must succeed in the end: refusals waited out, any other error raised."""
    response, _ = send_sync(request)
    response.raise_for_status()
    return response

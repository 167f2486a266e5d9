"""Slots, the engine's one bounded offload: what runs, what waits, what is refused and when to retry.

Calls block on events the test sets, so every state is reached on purpose; the only clock is a deadline
that is meant to pass.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from engine.errors import DecodeTimeout, Overloaded
from engine.slots import Slots

T = TypeVar("T")
WAIT_S = 10.0  # how long a blocked call may wait for its event: a hang, never a schedule


class Gate:
    """A call that says when its thread has started and returns `value` once opened."""

    def __init__(self, value: object = None) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()
        self.value = value

    def __call__(self) -> object:
        self.started.set()
        assert self.opened.wait(WAIT_S), "the test never opened the gate"
        return self.value

    async def running(self) -> None:
        assert await asyncio.to_thread(self.started.wait, WAIT_S), "the call never started"


def scenario(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(body())


async def settle() -> None:
    """Let every task that is ready run until it blocks (a waiting caller reaches its wait)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def until_idle(slots: Slots) -> None:
    """Wait for the threads' slots to come back (given back on the loop, when each thread is done)."""
    while slots.busy:
        await asyncio.sleep(0.001)


def test_at_most_workers_run_and_the_rest_wait_in_order() -> None:
    async def body() -> None:
        slots = Slots("decode", 2, 4, callers="uploads")
        gates = [Gate(i) for i in range(4)]
        tasks = [asyncio.create_task(slots.run(gate)) for gate in gates]
        await gates[0].running()
        await gates[1].running()
        await settle()
        assert (slots.busy, slots.waiting) == (2, 2)
        assert not gates[2].started.is_set() and not gates[3].started.is_set()
        gates[0].opened.set()
        await gates[2].running()  # the first waiter takes the freed slot
        await settle()
        assert (slots.busy, slots.waiting) == (2, 1)
        for gate in gates[1:]:
            gate.opened.set()
        assert await asyncio.gather(*tasks) == [0, 1, 2, 3]
        assert (slots.busy, slots.waiting) == (0, 0)
        slots.close()

    scenario(body)


def test_a_full_wait_list_is_refused_at_once_with_a_retry_after_from_the_mean() -> None:
    async def body() -> None:
        slots = Slots("decode", 1, 1, callers="uploads", mean_s=3.0)
        held, queued = Gate(), Gate()
        first = asyncio.create_task(slots.run(held))
        await held.running()
        second = asyncio.create_task(slots.run(queued))
        await settle()
        assert slots.waiting == 1
        with pytest.raises(Overloaded, match="all 1 decode workers are busy and 1 uploads wait") as refused:
            await slots.run(lambda: "never")
        assert refused.value.retry_after_s == 6  # itself and the one waiting: two rounds of 3 s
        held.opened.set()
        queued.opened.set()
        await asyncio.gather(first, second)
        slots.close()

    scenario(body)


def test_without_a_wait_list_a_busy_worker_refuses() -> None:
    async def body() -> None:
        slots = Slots("video", 1, 0, callers="videos", mean_s=1.5)
        held = Gate("done")
        first = asyncio.create_task(slots.run(held))
        await held.running()
        with pytest.raises(Overloaded, match="all 1 video workers are busy") as refused:
            await slots.run(lambda: "never")
        assert refused.value.retry_after_s == 2
        held.opened.set()
        assert await first == "done"
        assert await slots.run(lambda: "free again") == "free again"
        slots.close()

    scenario(body)


def test_no_wait_list_bound_means_callers_wait_however_many() -> None:
    async def body() -> None:
        slots = Slots("gallery-write", 1, None)
        gates = [Gate(i) for i in range(20)]
        tasks = [asyncio.create_task(slots.run(gate)) for gate in gates]
        await gates[0].running()
        await settle()
        assert slots.waiting == 19 and slots.refusal() is None
        for gate in gates:
            gate.opened.set()
        assert await asyncio.gather(*tasks) == list(range(20))
        slots.close()

    scenario(body)


def test_a_call_past_its_deadline_fails_its_caller_but_keeps_its_slot_until_its_thread_ends() -> None:
    async def body() -> None:
        slots = Slots("decode", 1, 4, 0.2, callers="uploads", late=DecodeTimeout, mean_s=0.15)
        held = Gate()
        with pytest.raises(DecodeTimeout) as late:
            await slots.run(held)
        assert late.value.retry_after_s >= 1
        assert slots.busy == 1 and slots.stuck  # the thread still runs, past the deadline
        with pytest.raises(Overloaded, match=r"past its 0\.2 s deadline"):
            await slots.run(lambda: "never")  # one round ahead and its own: longer than the deadline
        held.opened.set()
        await until_idle(slots)  # the slot comes back on the loop, once the thread is done
        assert not slots.stuck
        slots.close()

    scenario(body)


def test_the_expected_wait_decides_whether_a_caller_may_wait() -> None:
    async def body() -> None:
        slots = Slots("decode", 1, 64, 2.0, callers="uploads", late=DecodeTimeout, mean_s=0.6)
        held = Gate()
        first = asyncio.create_task(slots.run(held))
        await held.running()
        assert slots.expected_s() == pytest.approx(2 * 0.6)  # the running round and its own
        second = asyncio.create_task(slots.run(lambda: "second"))
        await settle()
        assert slots.refusal() is None and slots.expected_s() == pytest.approx(3 * 0.6)
        third = asyncio.create_task(slots.run(lambda: "third"))
        await settle()
        assert slots.expected_s() == pytest.approx(4 * 0.6)  # 2.4 s: past the 2 s deadline
        refused = slots.refusal()
        assert isinstance(refused, Overloaded) and "past its 2 s deadline" in str(refused)
        held.opened.set()
        assert await asyncio.gather(first, second, third) == [None, "second", "third"]
        slots.close()

    scenario(body)


def test_a_caller_that_leaves_does_not_free_its_slot_early() -> None:
    async def body() -> None:
        slots = Slots("video", 1, 0, callers="videos")
        held = Gate()
        caller = asyncio.create_task(slots.run(held))
        await held.running()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert slots.busy == 1
        with pytest.raises(Overloaded):
            await slots.run(lambda: "never")
        held.opened.set()
        await until_idle(slots)
        assert await slots.run(lambda: "next") == "next"
        slots.close()

    scenario(body)


def test_a_failing_call_raises_in_its_caller_and_frees_its_slot() -> None:
    def broken() -> None:
        raise ValueError("unreadable")

    async def body() -> None:
        slots = Slots("decode", 1, 0)
        with pytest.raises(ValueError, match="unreadable"):
            await slots.run(broken)
        assert slots.busy == 0 and await slots.run(lambda: 1) == 1
        slots.close()

    scenario(body)


def test_the_running_mean_is_the_one_retry_after_estimate() -> None:
    slots = Slots("inference", 1, None, mean_s=1.0)
    assert slots.retry_after(0) == 1  # never less than a second
    assert slots.retry_after(3) == 3  # three rounds of one worker at 1 s
    slots.record(6.0)  # 0.8 * 1 + 0.2 * 6 = 2
    assert slots.mean_s == pytest.approx(2.0) and slots.retry_after(3) == 6
    four = Slots("decode", 4, 8, mean_s=1.0)
    assert four.retry_after(5) == 2  # five calls on four workers: two rounds


def test_calls_run_in_the_callers_context_on_the_slots_own_threads() -> None:
    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")

    async def body() -> tuple[str, str]:
        slots = Slots("gallery-read", 2, None)
        who.set("request-7")
        seen = await slots.run(lambda: (who.get(), threading.current_thread().name))
        slots.close()
        return seen

    name, thread = scenario(body)
    assert name == "request-7" and thread.startswith("gaitlu-gallery-read")


def test_closed_slots_serve_again_on_another_loop() -> None:
    slots = Slots("decode", 1, 0)

    async def once() -> int:
        return await slots.run(lambda: 5)

    assert scenario(once) == 5
    slots.close()
    assert scenario(once) == 5  # a fresh pool and semaphore on a fresh loop
    slots.close(wait=True)


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        Slots("decode", 0, 0)
    with pytest.raises(ValueError, match="the error of a caller past it"):
        Slots("decode", 1, 0, 1.0)

"""Run picklable tasks in a process pool with bounded submission, yielding results as they finish.

Bounded, so a million-file job never queues everything up front, and interruptible: leaving the
generator (Ctrl-C, an error) cancels what has not started instead of finishing the whole queue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def run_tasks(fn: Callable[[T], R], tasks: Iterable[T], workers: int) -> Iterator[R]:
    """`fn` over `tasks`; in-process when workers <= 1 (tests, debugging), else in `workers` processes."""
    if workers <= 1:
        for task in tasks:
            yield fn(task)
        return
    max_pending = 2 * workers
    pending: set[Future[R]] = set()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        try:
            for task in tasks:
                pending.add(pool.submit(fn, task))
                if len(pending) >= max_pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()

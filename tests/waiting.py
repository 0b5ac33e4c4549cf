"""Waiting in tests: poll a condition until it holds or a deadline passes, never a fixed sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

DEFAULT_TIMEOUT_S = 10.0


def wait_until(predicate: Callable[[], object], timeout_s: float = DEFAULT_TIMEOUT_S,
               what: str = "the condition", interval_s: float = 0.01) -> None:
    """Return once `predicate()` is truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s} s")
        time.sleep(interval_s)


async def async_wait_until(predicate: Callable[[], object],
                           timeout_s: float = DEFAULT_TIMEOUT_S,
                           what: str = "the condition", interval_s: float = 0.0) -> None:
    """Return once `predicate()` is truthy, yielding to the event loop between checks.

    `predicate` may be a coroutine function (each check awaits it). With the default
    `interval_s` of 0 every check gives the other tasks one turn of the loop, so a
    condition that a ready task makes true holds at the first chance.
    """

    async def holds() -> object:
        result = predicate()
        return await result if inspect.isawaitable(result) else result

    deadline = time.monotonic() + timeout_s
    while not await holds():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s} s")
        await asyncio.sleep(interval_s)


async def let_ready_tasks_run(turns: int = 3) -> None:
    """Yield `turns` turns of the event loop, so that tasks already ready take their steps.

    For checks that something did *not* happen once the tasks made before it ran:
    each turn runs every task that was ready at its start, up to its next await.
    """
    for _ in range(turns):
        await asyncio.sleep(0)

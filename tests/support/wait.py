"""Waiting for a condition instead of sleeping for a guessed time.

A test that sleeps "long enough" for something to happen is slow when the machine is idle and
flaky when it is loaded. `wait_until` polls the condition until it holds or a deadline passes
(then it fails, saying what it waited for); the deadline is generous because a passing test
never reaches it. Absence ("nothing else happened") is not proved by waiting: wait for an event
that must come after the thing that should not happen, then assert it did not.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

__all__ = ["wait_until", "wait_until_sync"]


async def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, *, what: str = "", step: float = 0.01
) -> None:
    """Return as soon as `predicate()` is true (it may return an awaitable, e.g. a store
    query); fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout} s: {what or predicate}")
        await asyncio.sleep(step)


def wait_until_sync(
    predicate: Callable[[], object], timeout: float = 10.0, *, what: str = "", step: float = 0.02
) -> None:
    """`wait_until` for code outside an event loop (subprocess and thread tests)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {what or predicate}")
        time.sleep(step)

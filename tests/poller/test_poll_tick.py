"""Polls on a tick grid (`Scheduler(tick=...)`, `poller.poll_tick`): polls due in the same tick
start together, and each account is still polled every interval give or take half a tick."""

from __future__ import annotations

import asyncio
import itertools
import math
import selectors
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.poller import scheduler as scheduler_module
from bridge.poller.poll import PollReport
from bridge.poller.scheduler import Scheduler, on_tick
from bridge.poller.spec import AccountSpec
from bridge.store import Store


@given(
    delay=st.floats(0.001, 1e5),
    now=st.floats(0, 1e7),
    tick=st.floats(0.01, 10),
)
def test_on_tick_ends_on_the_nearest_tick_never_before_now(
    delay: float, now: float, tick: float
) -> None:
    moved = on_tick(delay, now, tick)
    assert moved >= 0
    end = now + moved
    # On the grid (unless that instant is already past: then at once) ...
    on_grid = math.isclose(round(end / tick) * tick, end, rel_tol=1e-9, abs_tol=1e-6)
    assert on_grid or moved == 0
    # ... and at most half a tick away from when it was due.
    assert abs(end - (now + delay)) <= tick / 2 + 1e-6 * max(1.0, now)


def test_on_tick_off() -> None:
    assert on_tick(12.3, 100.04, 0) == 12.3
    assert on_tick(0.0, 100.04, 1.0) == 0.0
    assert on_tick(12.3, 100.0, 1.0) == pytest.approx(12.0)
    assert on_tick(12.6, 100.0, 1.0) == pytest.approx(13.0)


class _VirtualSelector(selectors.DefaultSelector):
    """A selector whose wait for the next timer takes no time: when nothing is ready it moves
    `now` (the loop's clock, `_VirtualTimeLoop.time`) to the timer instead of sleeping."""

    now = 1000.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all: only I/O can wake the loop
            return super().select(None)
        self.now += timeout
        return []


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock: timers fire exactly when due and a sleep takes no
    real time, so the test measures the scheduler, not how late a loaded machine runs it."""

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def test_polls_due_in_one_tick_start_together_every_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: dict[str, list[float]] = {}
    tick = 0.1  # a twentieth of the 2 s interval, so the configured 0.25 s is capped

    async def fake_poll(spec: AccountSpec, *_: object, **__: object) -> PollReport:
        started.setdefault(spec.name, []).append(asyncio.get_running_loop().time())
        return PollReport(spec.name, started_at=0.0)

    async def scenario() -> None:
        # No session is opened (fake_poll), so the accounts point nowhere and the store is
        # never used (no leases).
        specs = [
            AccountSpec(
                name=f"a{i}",
                host="127.0.0.1",
                port=9,
                tls="none",
                username="u",
                password="pw",
                allow_plaintext=True,
                webhook="main",
                poll_interval=2.0,
            )
            for i in range(30)
        ]

        async def accounts() -> list[AccountSpec]:
            return specs

        sched = Scheduler(cast(Store, None), accounts, jitter=0.04, tick=0.25, max_concurrent=30)
        stop = asyncio.Event()
        task = asyncio.create_task(sched.run(stop, grace=2))
        await asyncio.sleep(4.6)
        stop.set()
        await asyncio.wait_for(task, 5)

    monkeypatch.setattr(scheduler_module, "poll_account", fake_poll)
    loop = _VirtualTimeLoop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()

    later = [t for times in started.values() for t in times[1:]]
    assert len(later) >= 30
    for t in later:  # every poll after the first starts on the grid of the loop's clock
        assert t / tick == pytest.approx(round(t / tick), abs=1e-6)
    for times in started.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # 2 s +- 4 % jitter, moved at most half a tick to the grid
        assert gaps and all(1.92 - tick / 2 - 1e-6 <= g <= 2.08 + tick / 2 + 1e-6 for g in gaps)
    # 30 accounts whose first polls (within 0.4 s) and second ones (2 s +- 0.08 later) each
    # fall on a handful of ticks: they start at the same instant, in the same turn of the loop.
    assert len(set(later)) <= len(later) / 3

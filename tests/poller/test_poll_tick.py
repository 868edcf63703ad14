"""Polls on a tick grid (`Scheduler(tick=...)`, `poller.poll_tick`): polls due in the same tick
start together, and each account is still polled every interval give or take half a tick."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.poller import scheduler as scheduler_module
from bridge.poller.poll import PollReport
from bridge.poller.scheduler import Scheduler, on_tick
from bridge.poller.spec import AccountSpec
from bridge.store import Store
from bridge.testing.fakepop3 import FakePOP3Server
from tests.support.accounts import fake_account


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


async def test_polls_due_in_one_tick_start_together_every_interval(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    started: dict[str, list[float]] = {}

    async def fake_poll(spec: AccountSpec, *_: object, **__: object) -> PollReport:
        started.setdefault(spec.name, []).append(loop.time())
        return PollReport(spec.name, started_at=0.0)

    monkeypatch.setattr(scheduler_module, "poll_account", fake_poll)
    async with FakePOP3Server([], user="u", password="pw") as server:
        # tick 0.1 s: a twentieth of the 2 s interval, so the configured 0.25 s is capped.
        specs = [fake_account(server, f"a{i}", poll_interval=2.0) for i in range(30)]

        async def accounts() -> list[AccountSpec]:
            return specs

        sched = Scheduler(store, accounts, jitter=0.04, tick=0.25, max_concurrent=30)
        stop = asyncio.Event()
        task = asyncio.create_task(sched.run(stop, grace=2))
        await asyncio.sleep(4.6)
        stop.set()
        await asyncio.wait_for(task, 5)

    later = [t for times in started.values() for t in times[1:]]
    assert len(later) >= 30
    for t in later:  # on the 0.1 s grid of the loop's clock (timers fire a little late)
        assert (t + 0.05) % 0.1 - 0.05 == pytest.approx(0.0, abs=0.02)
    for times in started.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # 2 s +- 4 % jitter, +- half a tick either end
        assert gaps and all(1.92 - 0.1 - 0.02 <= g <= 2.08 + 0.1 + 0.02 for g in gaps)
    # 30 accounts whose first polls (within 0.4 s) and second ones (2 s +- 0.08 later) each
    # fall on a handful of ticks: they share them.
    slots = [round(t / 0.1) for t in later]
    assert len(set(slots)) <= len(slots) / 3

"""CAPA LOGIN-DELAY (RFC 2449 §6.5) raises a shorter poll_interval, with one log line."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.poller.poll import PollReport
from bridge.poller.scheduler import Scheduler
from bridge.poller.spec import AccountSpec
from bridge.store import Store
from bridge.testing.fakepop3 import FakePOP3Server
from tests.support.accounts import fake_account
from tests.support.wait import wait_until


async def test_advertised_login_delay_slows_polling_to_it(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.poller.scheduler")
    async with (
        FakePOP3Server([], user="u", password="pw", login_delay=600) as slow,
        FakePOP3Server([], user="u", password="pw") as plain,
    ):
        specs = [
            fake_account(slow, "slow", poll_interval=0.1, read_timeout=5.0),
            fake_account(plain, "plain", poll_interval=0.1, read_timeout=5.0),
        ]
        reports: list[tuple[str, PollReport | None]] = []

        async def accounts() -> list[AccountSpec]:
            return specs

        sched = Scheduler(
            store, accounts, max_concurrent=2, jitter=0.1,
            on_report=lambda s, r, e: reports.append((s.name, r)),
        )  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(sched.run(stop, grace=2))
        # The account without a delay polls every 0.1 s: let it poll 6 times.
        await wait_until(lambda: sum(1 for n, r in reports if n == "plain" and r) >= 6, 20)
        stop.set()
        await asyncio.wait_for(task, 5)

    slow_reports = [r for n, r in reports if n == "slow"]
    assert sum(1 for n, r in reports if n == "plain" and r) >= 6
    # The old scheduler polled it as often as the other one.
    assert len(slow_reports) == 1 and slow_reports[0] is not None
    assert slow_reports[0].login_delay == 600
    noted = [r for r in caplog.records if "LOGIN-DELAY" in r.getMessage()]
    assert len(noted) == 1 and noted[0].account == "slow"  # type: ignore[attr-defined]
    assert "polling every 600s" in noted[0].getMessage()


async def test_a_login_delay_below_poll_interval_changes_nothing(store: Store) -> None:
    async with FakePOP3Server([], user="u", password="pw", login_delay=5) as server:
        spec = fake_account(server, "a", poll_interval=60, read_timeout=5.0)
        sched = Scheduler(store, lambda: asyncio.sleep(0, [spec]))
        report = PollReport("a", login_delay=5)
        assert sched._interval(spec, report) == 60
        assert sched._interval(spec, PollReport("a", login_delay=None)) == 60
        assert sched._interval(spec, PollReport("a", login_delay=90)) == 90

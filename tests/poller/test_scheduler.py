"""Per-account loops against fake POP3 servers: isolation, backoff, graceful stop."""

from __future__ import annotations

import asyncio
import random

from bridge.poller.poll import PollReport
from bridge.poller.scheduler import MAX_BACKOFF, Scheduler, backoff_delay, jittered
from bridge.poller.spec import AccountSpec
from bridge.store import Store
from bridge.testing.fakepop3 import FakePOP3Server, Faults
from bridge.testing.samples import generate_messages
from tests.support.accounts import fake_account
from tests.support.wait import wait_until


def test_backoff_doubles_caps_and_obeys_the_server() -> None:
    assert backoff_delay(60, 1) == 60
    assert backoff_delay(60, 2) == 120
    assert backoff_delay(60, 30) == MAX_BACKOFF
    assert backoff_delay(1, 1) == 5  # never hammer a failing server
    assert backoff_delay(60, 1, retry_after=900) == 900  # [LOGIN-DELAY 900]
    rng = random.Random(1)
    samples = [jittered(100, 0.2, rng) for _ in range(200)]
    assert all(80 <= s <= 120 for s in samples) and len(set(samples)) > 100


async def test_a_failing_account_never_stops_another(store: Store) -> None:
    good_box = generate_messages(3, seed=61)
    async with (
        FakePOP3Server(list(good_box), user="g", password="pw") as good,
        FakePOP3Server(
            [], user="b", password="pw", faults=Faults(err_on_pass="-ERR [IN-USE] locked")
        ) as bad,
    ):
        specs = [
            fake_account(good, "good", poll_interval=0.2, read_timeout=5.0),
            fake_account(bad, "bad", poll_interval=0.2, read_timeout=5.0),
        ]
        reports: list[tuple[str, PollReport | None, BaseException | None]] = []

        async def accounts() -> list[AccountSpec]:
            return specs

        sched = Scheduler(
            store,
            accounts,
            max_concurrent=2,
            jitter=0.1,
            on_report=lambda s, r, e: reports.append((s.name, r, e)),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(sched.run(stop, grace=2))
        await wait_until(lambda: sum(1 for n, r, _ in reports if n == "good" and r) >= 3)
        good.mailbox.append(generate_messages(1, seed=62)[0])

        async def four_pending() -> bool:
            return await store.pending_count("good") == 4

        await wait_until(four_pending, what="the new message recorded")
        stop.set()
        await asyncio.wait_for(task, 5)

    assert await store.pending_count("good") == 4
    bad_errors = [e for n, _, e in reports if n == "bad"]
    # IN-USE is temporary: the bad account backed off (5 s minimum) instead of retrying at once.
    assert len(bad_errors) == 1
    assert type(bad_errors[0]).__name__ == "TemporaryFailure"
    # Every session ended with QUIT or was dropped; the mailbox lock was released.
    assert not good._locked


async def test_poll_all_once_reports_each_account(store: Store) -> None:
    async with (
        FakePOP3Server(generate_messages(2, seed=63), user="u", password="pw") as ok,
        FakePOP3Server([], user="u", password="pw") as wrong,
    ):
        specs = [
            fake_account(ok, "ok", poll_interval=0.2, read_timeout=5.0),
            fake_account(wrong, "wrong", password="nope", poll_interval=0.2, read_timeout=5.0),
        ]

        async def accounts() -> list[AccountSpec]:
            return specs

        results = dict((s.name, r) for s, r in await Scheduler(store, accounts).poll_all_once())
    assert isinstance(results["ok"], PollReport) and results["ok"].recorded == 2
    assert isinstance(results["wrong"], Exception)


async def test_on_started_runs_once_after_the_first_loops_exist(store: Store) -> None:
    """`pop3bridge run` freezes the heap there: every account's loop must already exist (they
    are what a freeze is for), and no later refresh calls it again."""
    async with FakePOP3Server([], user="u", password="pw") as server:
        specs = [fake_account(server, f"a{i}", poll_interval=60) for i in range(3)]

        async def accounts() -> list[AccountSpec]:
            return specs

        sched = Scheduler(store, accounts, refresh=0.05)
        seen: list[set[str]] = []
        sched.on_started = lambda: seen.append(set(sched._loops))
        stop = asyncio.Event()
        task = asyncio.create_task(sched.run(stop, grace=2))
        await asyncio.sleep(0.3)  # several refreshes
        stop.set()
        await asyncio.wait_for(task, 5)
    assert seen == [{"a0", "a1", "a2"}]

"""While the store commits one group of fetched messages, the fetch goes on and gathers the
next group (`bridge.poller.fetch.GROUP_MESSAGES`): every message is still recorded once, in
mailbox order, and a session that fails mid-fetch still records every whole run it read,
the gathered group included, before the error surfaces."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from bridge.poller.fetch import BATCH_MESSAGES, GROUP_MESSAGES
from bridge.poller.poll import poll_account
from bridge.pop3.errors import POP3Error
from bridge.store import NewMessage, Store
from bridge.testing.fakepop3 import FakePOP3Server, FakeSession, Faults
from tests.support.accounts import fake_account

TOTAL = 3 * BATCH_MESSAGES + 50


def slow_first_record(store: Store, seconds: float) -> list[list[str]]:
    """Make the store's first `record` take `seconds`; returns the UIDLs of each call."""
    calls: list[list[str]] = []
    real = store.record

    async def record(messages: Sequence[NewMessage], now: float, *, replay: bool = False) -> None:
        calls.append([m.uidl for m in messages])
        if len(calls) == 1:
            await asyncio.sleep(seconds)
        await real(messages, now, replay=replay)

    store.record = record  # type: ignore[method-assign]
    return calls


def mailbox() -> list[bytes]:
    return [b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(TOTAL)]


async def test_batches_fetched_during_a_slow_commit_go_in_one_group(store: Store) -> None:
    calls = slow_first_record(store, 0.5)
    async with FakePOP3Server(mailbox()) as server:
        report = await poll_account(fake_account(server), store, delete_wait=0)
        uidls = server.uidls
    assert report.recorded == TOTAL
    assert await store.pending_count() == TOTAL
    # The first batch went on its own; what came while it was committed went as one group.
    assert [len(c) for c in calls] == [BATCH_MESSAGES, TOTAL - BATCH_MESSAGES]
    assert TOTAL - BATCH_MESSAGES <= GROUP_MESSAGES
    assert [u for c in calls for u in c] == uidls  # once each, in mailbox order


async def test_a_failing_session_records_the_group_it_gathered(store: Store) -> None:
    cut = 2 * BATCH_MESSAGES + 10  # the third run never ends

    async def retr(session: FakeSession, args: tuple[str, ...]) -> None:
        if int(args[0]) == cut:
            session.hang_up()
        await session.cmd_retr(args)

    calls = slow_first_record(store, 0.5)
    async with FakePOP3Server(mailbox(), faults=Faults(answer={"RETR": retr})) as server:
        with pytest.raises(POP3Error):
            await poll_account(fake_account(server), store, delete_wait=0)
        uidls = server.uidls
    # Run 1 was being committed, run 2 was gathered behind it: both are recorded.
    assert [len(c) for c in calls] == [BATCH_MESSAGES, BATCH_MESSAGES]
    assert await store.pending_count() == 2 * BATCH_MESSAGES
    assert [u for c in calls for u in c] == uidls[: 2 * BATCH_MESSAGES]

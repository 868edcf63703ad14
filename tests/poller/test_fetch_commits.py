"""Batches commit in order with several in flight (`COMMITS_IN_FLIGHT`): a batch whose commit
fails stops every later one, so what is recorded is always a prefix of what was fetched, and
the next poll records the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from bridge.poller.fetch import BATCH_MESSAGES, COMMITS_IN_FLIGHT
from bridge.poller.poll import poll_account
from bridge.store import Store
from bridge.store.base import NewMessage
from bridge.testing.samples import generate_messages
from tests.poller.conftest import dovecot_spec
from tests.support.dovecot import DovecotServer, DovecotUser

pytestmark = pytest.mark.dovecot


class Boom(Exception):
    pass


async def test_a_failed_commit_stops_the_later_batches(
    dovecot: DovecotServer, dovecot_user: DovecotUser, store: Store
) -> None:
    batches = COMMITS_IN_FLIGHT + 2
    count = BATCH_MESSAGES * batches - 10
    dovecot.deliver_many(dovecot_user, generate_messages(count, seed=61, size=600))
    spec = dovecot_spec(dovecot, dovecot_user)
    real_record = store.record
    calls: list[list[str]] = []
    first_running = asyncio.Event()
    release = asyncio.Event()

    async def slow_then_failing(messages: Sequence[NewMessage], now: float, **kw: object) -> None:
        calls.append([m.uidl for m in messages])
        if len(calls) == 1:
            first_running.set()
            await release.wait()  # held until later batches are queued behind it
            await real_record(messages, now)
            return
        raise Boom("disk on fire")

    async def unblock() -> None:
        await first_running.wait()
        await asyncio.sleep(0.3)  # the fetch queues batches 2..COMMITS_IN_FLIGHT meanwhile
        release.set()

    store.record = slow_then_failing  # type: ignore[method-assign]
    helper = asyncio.create_task(unblock())
    with pytest.raises(Boom):
        await poll_account(spec, store)
    await helper
    store.record = real_record  # type: ignore[method-assign]

    # The second commit failed; none after it ran, though they were queued.
    assert len(calls) == 2
    assert await store.pending_count() == BATCH_MESSAGES
    report = await poll_account(spec, store)
    assert report.recorded == count - BATCH_MESSAGES
    assert await store.pending_count() == count

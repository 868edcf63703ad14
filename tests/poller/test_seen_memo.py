"""`SeenMemo`: idle polls skip the store's seen-set read, and never skip a message for it.

A scripted POP3 server (`FakePOP3Server`: mail can be added and removed between polls in
one line) and the real SQLite store. Each test counts the store's `seen_state` reads.
"""

from __future__ import annotations

import time

import pytest

from bridge.poller.poll import SeenMemo, poll_account
from bridge.pop3.errors import ConnectionLost
from bridge.store import Store
from bridge.testing.fakepop3 import FakePOP3Server, Faults
from bridge.testing.samples import generate_messages
from tests.poller.test_poll import deliver_all, migrating_spec


def count_reads(store: Store) -> list[str]:
    """Calls of `store.seen_state` from now on, by account."""
    reads: list[str] = []
    real = store.seen_state

    async def counted(account: str):  # type: ignore[no-untyped-def]
        reads.append(account)
        return await real(account)

    store.seen_state = counted  # type: ignore[method-assign]
    return reads


async def outbox_uidls(store: Store) -> list[str]:
    items = await store.claim_due(time.time() + 1, 10_000, "check", 60)
    return sorted(item.uidl for item in items)


async def test_idle_polls_skip_the_store_and_new_mail_is_still_recorded(store: Store) -> None:
    async with FakePOP3Server(generate_messages(3, seed=5), user="u", password="pw") as server:
        spec, memo = migrating_spec(server), SeenMemo()
        reads = count_reads(store)
        assert (await poll_account(spec, store, memo=memo)).recorded == 3
        assert reads == [spec.name]  # the first poll in this process reads the store
        assert memo.uidls == set(server.uidls)

        for _ in range(3):
            idle = await poll_account(spec, store, memo=memo)
            assert (idle.new, idle.recorded) == (0, 0)
        assert reads == [spec.name]  # ...the idle ones do not

        server.mailbox.extend(generate_messages(2, seed=6))
        fresh = await poll_account(spec, store, memo=memo)
        assert (fresh.new, fresh.recorded) == (2, 2)
        assert reads == [spec.name] * 2  # a listed id the memo lacks: the store is asked
        assert memo.uidls == set(server.uidls)
        assert len(await outbox_uidls(store)) == 5


async def test_mail_another_process_recorded_is_not_recorded_again(store: Store) -> None:
    """A stale memo lacks what another replica (or `once`) recorded: such an id sends the
    poll to the store, which knows it, so it is neither new nor fetched twice."""
    async with FakePOP3Server(generate_messages(2, seed=7), user="u", password="pw") as server:
        spec, memo = migrating_spec(server), SeenMemo()
        await poll_account(spec, store, memo=memo)
        server.mailbox.extend(generate_messages(1, seed=8))
        other = await poll_account(spec, store)  # no memo: another process
        assert other.recorded == 1
        reads = count_reads(store)
        server.commands_seen.clear()
        mine = await poll_account(spec, store, memo=memo)
        assert (mine.new, mine.recorded) == (0, 0)
        assert reads == [spec.name]
        assert "RETR" not in [verb for verb, _ in server.commands_seen]
        assert memo.uidls == set(server.uidls)
    assert len(await outbox_uidls(store)) == 3


async def test_a_prune_that_keeps_rows_sends_the_next_poll_to_the_store(store: Store) -> None:
    """A message that left the server while its delivery is pending stays seen (the store keeps
    unfinished messages): the memo is dropped, and once the delivery is done a later poll
    prunes it, as without a memo."""
    async with FakePOP3Server(generate_messages(3, seed=9), user="u", password="pw") as server:
        spec, memo = migrating_spec(server), SeenMemo()
        await poll_account(spec, store, memo=memo)
        gone = server.uidls[0]
        del server.mailbox[0]
        reads = count_reads(store)
        kept = await poll_account(spec, store, memo=memo)
        assert reads == []  # what is listed is still covered: the prune is what asks
        assert kept.pruned == 0 and memo.uidls is None
        assert gone in await store.seen_uidls(spec.name)

        await deliver_all(store)
        later = await poll_account(spec, store, memo=memo)
        assert later.pruned == 1 and reads == [spec.name]
        assert gone not in await store.seen_uidls(spec.name)
        assert memo.uidls == set(server.uidls)
        # The pruned id is out of the memo too: listed again, it would be asked about.
        assert (await poll_account(spec, store, memo=memo)).pruned == 0
        assert reads == [spec.name]


async def test_a_failed_poll_leaves_the_memo_as_the_store_was(store: Store) -> None:
    async with FakePOP3Server(generate_messages(2, seed=10), user="u", password="pw") as server:
        spec, memo = migrating_spec(server), SeenMemo()
        await poll_account(spec, store, memo=memo)
        before = memo.uidls
        server.mailbox.extend(generate_messages(1, seed=11))
        server.queue_faults(Faults(drop_after_bytes_in_retr=10))
        with pytest.raises(ConnectionLost):
            await poll_account(spec, store, memo=memo)
        assert memo.uidls == before
        again = await poll_account(spec, store, memo=memo)
        assert again.recorded == 1

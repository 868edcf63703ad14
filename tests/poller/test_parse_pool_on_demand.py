"""The parse workers start only when a poll finds new mail (`ParsePool.warm`).

An empty `pop3bridge once`, cron's usual run, used to start the forkserver, its resource
tracker and a worker regardless: 0.25-0.35 s of CPU for nothing to parse. The poller now
starts them after UIDL shows new messages, so their start still overlaps the RETRs.
"""

from __future__ import annotations

from bridge.outbox import ParsePool
from bridge.poller.poll import poll_account
from bridge.store import Store
from bridge.testing.fakepop3 import FakePOP3Server
from tests.support.accounts import fake_account

MAIL = b"From: a@example.com\r\nSubject: hello\r\n\r\nhi\r\n"


async def test_a_poll_that_finds_nothing_new_starts_no_parse_worker(store: Store) -> None:
    pool = ParsePool(1)
    try:
        async with FakePOP3Server([MAIL]) as server:
            spec = fake_account(server)
            first = await poll_account(spec, store, delete_wait=0)
            assert first.recorded == 1
            assert pool.started  # new mail: the workers were launched during the fetch
        pool.close()
        pool = ParsePool(1)
        async with FakePOP3Server([MAIL]) as server:
            again = await poll_account(fake_account(server), store, delete_wait=0)
        assert again.recorded == 0  # seen already
        assert not pool.started
    finally:
        pool.close()


async def test_a_body_built_without_warm_up_starts_the_workers_itself(store: Store) -> None:
    from bridge.outbox import BodyJob, BodySpec
    from bridge.store.base import OutboxItem, deferred_payload

    pool = ParsePool(1)
    try:
        assert not pool.started
        item = OutboxItem(
            id=1,
            msg_id="msg_1",
            account="acct",
            uidl="u1",
            webhook="main",
            payload=deferred_payload("poller"),
            attempts=0,
            created_at=1_700_000_000.0,
            next_attempt_at=1_700_000_000.0,
            last_error=None,
            size=len(MAIL),
            raw=MAIL,
        )
        body = await pool.run(BodyJob(BodySpec(1 << 20, False), item, 1_700_000_000.0))
        assert pool.started and b'"subject":"hello"' in body
    finally:
        pool.close()

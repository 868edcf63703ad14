"""The parse workers start only when a poll finds new mail (`ParsePool.warm`).

An empty `pop3bridge once`, cron's usual run, used to start the forkserver, its resource
tracker and a worker regardless: 0.25-0.35 s of CPU for nothing to parse. The poller now
starts them after UIDL shows new messages, so their start still overlaps the RETRs.
"""

from __future__ import annotations

import asyncio

from bridge.outbox import BodyJob, BodySpec, ParsePool
from bridge.poller.poll import poll_account
from bridge.store import Store
from bridge.testing.fakepop3 import FakePOP3Server
from tests.support.accounts import fake_account
from tests.support.outbox import T0, claimed_row

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
    pool = ParsePool(1)
    try:
        assert not pool.started
        body = await pool.run(BodyJob(BodySpec(1 << 20, False), claimed_row(MAIL, 1), T0))
        assert pool.started and b'"subject":"hello"' in body
    finally:
        pool.close()


async def test_the_first_batch_is_one_job_so_the_first_body_waits_for_one_parse() -> None:
    # A delivery claim queues all its bodies at once; the first POST needs only the first.
    pool = ParsePool(1)
    sizes: list[int] = []
    send = pool._send

    async def counted(slot: int, jobs: list[object]) -> list[object]:
        sizes.append(len(jobs))
        return await send(slot, jobs)  # type: ignore[arg-type]

    pool._send = counted  # type: ignore[method-assign]
    try:
        spec = BodySpec(1 << 20, False)
        bodies = await asyncio.gather(
            *(
                pool.run(
                    BodyJob(spec, claimed_row(MAIL.replace(b"hello", f"hello {n}".encode()), n), T0)
                )
                for n in range(1, 8)
            )
        )
        assert sizes == [1, 6]  # the first alone, then the rest together
        assert [f'"subject":"hello {n}"'.encode() in b for n, b in enumerate(bodies, 1)] == [
            True
        ] * 7
    finally:
        pool.close()

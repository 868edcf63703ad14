"""Time the parse workers take at fetch is not the server's: it moves the session's deadline.

A poll session has one deadline (read_timeout per step plus the fetch's size allowance), so a
server trickling its answers cannot hold a mailbox for ever. Rows parsed when they are fetched
(big messages, attachment links) wait for the parse workers, each message within
`poller.parse_timeout`; that wait used to count against the same deadline, so a mailbox of
slow-to-parse mail could time out on every poll and never be recorded.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge.outbox import rows
from bridge.poller import fetch
from bridge.poller.poll import poll_account
from bridge.poller.spec import FetchOptions
from bridge.store import Store
from bridge.testing.fakepop3 import FakePOP3Server
from tests.attachments.support import minter
from tests.support.accounts import fake_account


class SlowPool:
    """A parse pool whose workers take `seconds` per message, one message at a time."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = asyncio.Lock()
        self.parsed = 0

    def allowance(self, jobs: int) -> float:
        return jobs * 5.0 + 30

    def warm(self) -> None:
        """Nothing to launch (`ParsePool.warm` starts the worker processes)."""

    async def run(self, job: Any) -> Any:
        async with self.lock:
            await asyncio.sleep(self.seconds)  # the stand-in for a worker's CPU time
            self.parsed += 1
            return job.run()


async def test_a_mailbox_of_slow_to_parse_mail_is_recorded(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = [b"From: a@example.com\r\nSubject: %d\r\n\r\n" % i + b"x" * 2000 for i in range(6)]
    pool = SlowPool(0.6)  # 3.6 s of parsing in all
    monkeypatch.setattr(rows, "current_pool", lambda: pool)
    monkeypatch.setattr(fetch, "current_pool", lambda: pool)
    async with FakePOP3Server(box) as server:
        # A 0.2 s read timeout gives the session about 2 s; links on with a 1 KiB inline
        # limit make every message a row parsed at fetch.
        spec = fake_account(
            server,
            read_timeout=0.2,
            fetch=FetchOptions(attachment_inline_limit=1024, links=minter()),
        )
        report = await poll_account(spec, store, delete_wait=0)
    assert pool.parsed == 6
    assert report.recorded == 6

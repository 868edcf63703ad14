"""Issue 19, findings 3 and 4: UIDL listings a hostile or broken server sends.

3. A UIDL answer of 100,000 tiny entries all for message 1 while STAT says 1: before, the
   bridge buffered and parsed all of it (95 MB drove `once` to 2.3 GB RSS) and recorded
   100,000 new messages, fetching message 1 for each. Now STAT's count bounds the answer's
   size and its numbers: the poll is a clear protocol error, nothing recorded or fetched.
   Duplicate UIDLs for different messages: every one is delivered (before: one of three).
4. One non-UTF-8 UIDL (`b"\\xff\\xfe"`) made every poll of the mailbox fail with
   UnicodeEncodeError; now it is keyed by its escaped bytes, with a warning, and the mailbox
   is delivered.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from bridge.poller.poll import poll_account
from bridge.pop3.errors import RemoteProtocolError
from bridge.store import Store
from bridge.testing.fakepop3 import FakePOP3Server, FakeSession, Faults
from tests.support.accounts import fake_account
from tests.support.rss import RssPeak


def mail(n: int) -> bytes:
    return b"From: a@example.com\r\nSubject: message %d\r\n\r\nbody %d\r\n" % (n, n)


async def test_a_non_utf8_uidl_does_not_stop_the_mailbox(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakePOP3Server([mail(1), mail(2), mail(3)]) as server:
        server.set_uidl(1, b"\xff\xfe".decode("utf-8", "surrogateescape"))
        server.set_uidl(2, "ctl\x01id")
        report = await poll_account(fake_account(server, auth="user", connect_timeout=10), store)
        again = await poll_account(fake_account(server, auth="user", connect_timeout=10), store)
    assert report.recorded == 3 and again.recorded == 0  # the keys are stable across polls
    assert {"x-uidl:%FF%FE", "x-uidl:ctl%01id"} <= await store.seen_uidls("acct")
    assert "not RFC 1939 text" in caplog.text


async def test_duplicate_uidls_deliver_every_message(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakePOP3Server([mail(1), mail(2), mail(3), mail(4)]) as server:
        for index in range(3):
            server.set_uidl(index, "same-id")
        report = await poll_account(fake_account(server, auth="user", connect_timeout=10), store)
        again = await poll_account(fake_account(server, auth="user", connect_timeout=10), store)
    assert report.recorded == 4 and again.recorded == 0
    keys = await store.seen_uidls("acct")
    assert "same-id" in keys and sum(k.startswith("same-id#") for k in keys) == 2
    assert "a UIDL another message has" in caplog.text


class ListingBomb:
    """The fake server with one message, whose UIDL answer lists `entries` distinct ids, all
    for message 1 (STAT, LIST and the rest stay correct: STAT says one message)."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.sent = 0
        self.server = FakePOP3Server(
            [mail(1)], faults=Faults(no_capa=True, answer={"UIDL": self.uidl})
        )

    async def uidl(self, session: FakeSession, args: tuple[str, ...]) -> None:
        await session.send(b"+OK\r\n")
        chunk = []
        for k in range(self.entries):
            chunk.append(b"1 u%d\r\n" % k)
            if len(chunk) == 1000:
                data = b"".join(chunk)
                self.sent += len(data)
                chunk = []
                await session.send(data)
        await session.send(b"".join(chunk) + b".\r\n")


@pytest.fixture
async def bomb() -> AsyncIterator[ListingBomb]:
    bomb = ListingBomb(entries=2_000_000)  # about 20 MB of UIDL lines
    async with bomb.server:
        yield bomb


async def test_a_listing_beyond_stat_is_a_protocol_error_with_bounded_memory(
    store: Store, bomb: ListingBomb
) -> None:
    with (
        RssPeak(os.getpid()) as rss,
        pytest.raises(RemoteProtocolError, match="multi-line answer of more than"),
    ):
        await poll_account(fake_account(bomb.server, auth="user", connect_timeout=10), store)
    assert "RETR" not in bomb.server.verbs and "QUIT" not in bomb.server.verbs
    assert await store.seen_uidls("acct") == set()
    assert bomb.sent < 5_000_000  # it stopped reading almost at once
    assert rss.growth < 30 * 1024 * 1024, rss.growth


async def test_numbers_beyond_stat_or_repeated_are_refused(store: Store) -> None:
    async with ListingBomb(entries=3).server as server:  # small: the size cap does not trigger
        with pytest.raises(RemoteProtocolError, match="more than once"):
            await poll_account(fake_account(server, auth="user", connect_timeout=10), store)
    assert await store.seen_uidls("acct") == set()
    assert "RETR" not in server.verbs

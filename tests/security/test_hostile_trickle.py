"""Issue 19, finding 6: a body that trickles one line at a time never ended a poll, since the
read timeout is per read. A RETR now has one deadline for the whole answer: read_timeout plus
its announced size at 16 KiB/s. Past it the session is dropped without QUIT (nothing deleted,
nothing recorded from the unfinished message) and the next poll tries again."""

from __future__ import annotations

import asyncio

import pytest

from bridge.poller.poll import poll_account, retr_deadline
from bridge.poller.spec import AccountSpec
from bridge.pop3.errors import ReadTimeout
from bridge.store import Store
from bridge.testing.fakepop3 import FakePOP3Server, FakeSession, Faults
from tests.support.accounts import fake_account


async def trickle_retr(session: FakeSession, args: tuple[str, ...]) -> None:
    """The stimulus: a body that never ends, one line every 0.2 s (a sleep on purpose)."""
    await session.send(b"+OK\r\nSubject: slow\r\n\r\n")
    while True:
        await session.send(b"x\r\n")
        await asyncio.sleep(0.2)


async def huge_stat(session: FakeSession, args: tuple[str, ...]) -> None:
    await session.send(b"+OK 100000 10000000\r\n")


async def trickle_uidl(session: FakeSession, args: tuple[str, ...]) -> None:
    """The stimulus: a listing of 100,000 lines, one every 0.2 s (a sleep on purpose)."""
    await session.send(b"+OK\r\n")
    for n in range(1, 100_001):
        await session.send(b"%d slow-%d\r\n" % (n, n))
        await asyncio.sleep(0.2)


def trickler(uidl: bool = False) -> FakePOP3Server:
    """The fake server with one small message whose RETR trickles a line every 0.2 s, for
    ever; with `uidl=True` the UIDL answer trickles instead (STAT says 100,000 messages)."""
    answer = {"STAT": huge_stat, "UIDL": trickle_uidl} if uidl else {"RETR": trickle_retr}
    return FakePOP3Server(
        [b"Subject: slow\r\n\r\nx\r\n"],
        user="u",
        password="p-trickle",
        faults=Faults(no_capa=True, answer=answer),
    )


def trickled(server: FakePOP3Server, read_timeout: float) -> AccountSpec:
    # Every single read is quick: only an overall deadline can end the poll.
    return fake_account(server, auth="user", read_timeout=read_timeout)


def test_the_deadline_grows_with_the_announced_size() -> None:
    assert retr_deadline(120, 0) == 120
    assert retr_deadline(120, 50 * 1024 * 1024) == 120 + 3200


async def test_a_trickling_uidl_meets_the_session_deadline(store: Store) -> None:
    async with trickler(uidl=True) as server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ReadTimeout, match="poll session took longer"):
            await asyncio.wait_for(poll_account(trickled(server, 0.5), store, delete_wait=1), 30)
        assert loop.time() - started < 15
    assert "QUIT" not in server.verbs and "RETR" not in server.verbs


async def test_a_trickling_retr_ends_the_poll_without_quit(store: Store) -> None:
    async with trickler() as server:
        spec = trickled(server, 1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ReadTimeout, match="RETR of 1 message"):
            await asyncio.wait_for(poll_account(spec, store), 20)
        assert loop.time() - started < 10
    assert "QUIT" not in server.verbs and "DELE" not in server.verbs
    assert await store.seen_uidls("acct") == set()

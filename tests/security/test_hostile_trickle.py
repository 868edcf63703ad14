"""Issue 19, finding 6: a body that trickles one line at a time never ended a poll, since the
read timeout is per read. A RETR now has one deadline for the whole answer: read_timeout plus
its announced size at 16 KiB/s. Past it the session is dropped without QUIT (nothing deleted,
nothing recorded from the unfinished message) and the next poll tries again."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from bridge.poller.poll import poll_account, retr_deadline
from bridge.poller.spec import AccountSpec
from bridge.pop3.errors import ReadTimeout
from bridge.store import Store


class Trickler:
    """STAT/UIDL/LIST say one 100-octet message; RETR then sends a line every 0.2 s, for ever.
    With `uidl=True` the UIDL answer trickles instead (STAT says 100,000 messages)."""

    def __init__(self, uidl: bool = False) -> None:
        self.uidl = uidl
        self.commands: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Trickler:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        answers = {
            b"CAPA": b"-ERR no\r\n",
            b"USER": b"+OK\r\n",
            b"PASS": b"+OK\r\n",
            b"STAT": b"+OK 1 100\r\n",
            b"UIDL": b"+OK\r\n1 slow-1\r\n.\r\n",
            b"LIST": b"+OK\r\n1 100\r\n.\r\n",
            b"QUIT": b"+OK\r\n",
        }
        w.write(b"+OK trickler\r\n")
        with contextlib.suppress(ConnectionError, OSError):
            while line := await r.readline():
                verb = line.split()[0].upper() if line.split() else b""
                self.commands.append(verb)
                if verb == b"STAT" and self.uidl:
                    w.write(b"+OK 100000 10000000\r\n")
                    await w.drain()
                    continue
                if verb == b"UIDL" and self.uidl:
                    w.write(b"+OK\r\n")
                    for n in range(1, 100_001):
                        w.write(b"%d slow-%d\r\n" % (n, n))
                        await w.drain()
                        await asyncio.sleep(0.2)
                if verb == b"RETR":
                    w.write(b"+OK\r\nSubject: slow\r\n\r\n")
                    while True:
                        w.write(b"x\r\n")
                        await w.drain()
                        await asyncio.sleep(0.2)
                w.write(answers.get(verb, b"-ERR unknown\r\n"))
                await w.drain()
        w.close()


def test_the_deadline_grows_with_the_announced_size() -> None:
    assert retr_deadline(120, 0) == 120
    assert retr_deadline(120, 50 * 1024 * 1024) == 120 + 3200


def spec_for(port: int) -> AccountSpec:
    return AccountSpec(
        name="acct",
        host="127.0.0.1",
        port=port,
        username="u",
        password="p-trickle",
        webhook="main",
        tls="none",
        auth="user",
        allow_plaintext=True,
        connect_timeout=5,
        read_timeout=0.5,  # every single read is quick: only an overall deadline can end it
    )


async def test_a_trickling_uidl_meets_the_session_deadline(store: Store) -> None:
    async with Trickler(uidl=True) as server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ReadTimeout, match="poll session took longer"):
            await asyncio.wait_for(poll_account(spec_for(server.port), store, delete_wait=1), 30)
        assert loop.time() - started < 15
    assert b"QUIT" not in server.commands and b"RETR" not in server.commands


async def test_a_trickling_retr_ends_the_poll_without_quit(store: Store) -> None:
    async with Trickler() as server:
        spec = AccountSpec(
            name="acct",
            host="127.0.0.1",
            port=server.port,
            username="u",
            password="p-trickle",
            webhook="main",
            tls="none",
            auth="user",
            allow_plaintext=True,
            connect_timeout=5,
            read_timeout=1,  # every single read is quick: only an overall deadline can end it
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ReadTimeout, match="RETR of 1 message"):
            await asyncio.wait_for(poll_account(spec, store), 20)
        assert loop.time() - started < 10
    assert b"QUIT" not in server.commands and b"DELE" not in server.commands
    assert await store.seen_uidls("acct") == set()

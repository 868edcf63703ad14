"""Issue 19, finding 2: a hostile or intercepted upstream cannot grow the proxy's memory or
hold a client for ever before the relay starts.

Before: `connect_upstream()` read the upstream's CAPA without a cap, so an endless answer was
buffered (0.66 -> 3.35 GB in 12 s) and the client never got a greeting; and only per-read
timeouts bounded connect + greeting + CAPA, so a trickle never ended. Now the CAPA is capped
like the client-facing one (64 KiB) and one deadline covers the whole set-up: the client gets
`-ERR` quickly either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest

from bridge.proxy import session
from bridge.testing.fakepop3 import FakePOP3Server, FakeSession, Faults
from tests.proxy.support import running_proxy
from tests.support.rss import RssPeak

LINE = b"X-" + b"a" * 1000 + b"\r\n"


class HostileUpstream:
    """The fake server whose CAPA answer never ends: lines `pause` seconds apart (the
    stimulus; a sleep on purpose), up to `limit` octets so the test itself stays bounded on
    the old code, then silence without the terminating dot."""

    def __init__(self, pause: float, limit: int, chunk: bytes = LINE * 64) -> None:
        self.pause = pause
        self.chunk = chunk
        self.limit = limit
        self.sent = 0
        self.server = FakePOP3Server(faults=Faults(answer={"CAPA": self.capa}))

    async def capa(self, session: FakeSession, args: tuple[str, ...]) -> None:
        await session.send(b"+OK\r\n")
        while self.sent < self.limit:
            self.sent += len(self.chunk)
            await session.send(self.chunk)
            if self.pause:
                await asyncio.sleep(self.pause)
        await asyncio.Event().wait()  # never the terminating dot

    @property
    def port(self) -> int:
        return self.server.port

    async def __aenter__(self) -> HostileUpstream:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()


@contextlib.asynccontextmanager
async def proxy_to(port: int) -> AsyncIterator[int]:
    config = {
        "listeners": [{"name": "plain", "port": 0}],
        "upstream": {"host": "127.0.0.1", "port": port, "tls": "none"},
    }
    async with running_proxy(config) as server:
        yield server.addresses["plain"][1]


async def first_line(port: int, wait: float) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await asyncio.wait_for(reader.readline(), wait)
    finally:
        writer.close()


async def test_an_endless_capa_is_cut_with_bounded_memory() -> None:
    async with (
        HostileUpstream(pause=0, limit=200 * 1024 * 1024) as upstream,
        proxy_to(upstream.port) as port,
    ):
        with RssPeak(os.getpid()) as rss:
            line = await first_line(port, 20)
    assert line.startswith(b"-ERR"), line
    assert rss.growth < 40 * 1024 * 1024, rss.growth
    assert upstream.sent < 20 * 1024 * 1024


async def test_a_trickling_upstream_meets_one_setup_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(session, "UPSTREAM_SETUP_DEADLINE", 1.5)
    # A short line every 0.3 s stays under the 64 KiB cap for minutes, and every read is
    # quick: only an overall deadline ends it.
    async with (
        HostileUpstream(pause=0.3, limit=10**9, chunk=b"X-TRICKLE\r\n") as upstream,
        proxy_to(upstream.port) as port,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()
        line = await first_line(port, 15)
        took = loop.time() - started
    assert line.startswith(b"-ERR"), line
    assert took < 8, took

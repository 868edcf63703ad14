"""A hostile upstream that announces a small message in LIST and then streams a huge one.
Before the cap, the client buffered whatever came until memory ran out; now a multi-line
answer over `max_body` drops the connection with a typed error, and the poller sets that cap
from `max_message_size`, so the mailbox is left as it was and nothing is recorded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge.poller.poll import max_answer_size
from bridge.pop3.client import POP3Client
from bridge.pop3.errors import RemoteProtocolError
from tests.security.cli import bridge, write_config
from tests.support.loop import LoopThread

LINE = b"x" * 1000 + b"\r\n"


class LyingServer:
    """Says every message is 100 octets; RETR then sends `retr_lines` lines of 1 KB."""

    def __init__(self, retr_lines: int) -> None:
        self.retr_lines = retr_lines
        self.sent = 0  # RETR octets actually written before the client gave up
        self.commands: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        answers = {
            b"CAPA": b"-ERR no\r\n",
            b"USER": b"+OK\r\n",
            b"PASS": b"+OK\r\n",
            b"STAT": b"+OK 1 100\r\n",
            b"UIDL": b"+OK\r\n1 lie-1\r\n.\r\n",
            b"LIST": b"+OK\r\n1 100\r\n.\r\n",
            b"QUIT": b"+OK\r\n",
        }
        w.write(b"+OK liar ready\r\n")
        with contextlib.suppress(ConnectionError):
            while line := await r.readline():
                verb = line.split()[0].upper() if line.split() else b""
                self.commands.append(verb)
                if verb == b"RETR":
                    w.write(b"+OK 100 octets\r\n")
                    for _ in range(self.retr_lines):
                        w.write(LINE)
                        self.sent += len(LINE)
                        await w.drain()
                    w.write(b".\r\n")
                else:
                    w.write(answers.get(verb, b"-ERR unknown\r\n"))
                await w.drain()
        w.close()


@pytest.fixture
async def liar() -> AsyncIterator[LyingServer]:
    server = LyingServer(retr_lines=3000)  # ~3 MB behind a "100 octets" LIST entry
    await server.start()
    yield server
    await server.stop()


async def test_client_drops_an_answer_over_max_body(liar: LyingServer) -> None:
    client = await POP3Client.connect("127.0.0.1", liar.port, tls="none", max_body=256 * 1024)
    await client.login("u", "p", allow_plaintext=True)
    with pytest.raises(RemoteProtocolError, match="more than 262144 octets"):
        await client.retrieve(1)
    assert client.closed


async def test_without_a_cap_the_whole_lie_is_buffered(liar: LyingServer) -> None:
    """The control: the same server, no cap, and the client takes all ~3 MB."""
    client = await POP3Client.connect("127.0.0.1", liar.port, tls="none")
    await client.login("u", "p", allow_plaintext=True)
    assert len(await client.retrieve(1)) == 3000 * len(LINE)
    client.abort()


def test_poller_caps_answers_from_max_message_size() -> None:
    assert max_answer_size(1000) == 2 * 1000 + 1024 * 1024


@pytest.fixture
def liar_in_thread() -> Iterator[LyingServer]:
    with LoopThread() as loop:
        server = LyingServer(retr_lines=20_000)  # ~20 MB streamed after "100 octets"
        loop.call(server.start())
        try:
            yield server
        finally:
            loop.call(server.stop())


def test_once_against_a_lying_server_fails_cleanly(
    tmp_path: Path, liar_in_thread: LyingServer
) -> None:
    account = {
        "name": "liar",
        "host": "127.0.0.1",
        "port": liar_in_thread.port,
        "tls": "none",
        "allow_plaintext": True,
        "auth": "user",
        "username": "u",
        "password": "p-lying-server",
        "webhook": "main",
        "max_message_size": "1KB",
        "on_delivered": "delete",
    }
    cfg = write_config(tmp_path / "c.yaml", [account], state=f"sqlite:///{tmp_path / 's.db'}")
    code, out = bridge("once", "--config", str(cfg))
    assert code != 0, out
    assert "far more than it announced" in out, out
    # It stopped reading near the cap (plus what sat in socket buffers), not at 20 MB...
    assert liar_in_thread.sent < 10 * 1024 * 1024
    # ...and left without QUIT or DELE: the mailbox is as it was.
    assert b"DELE" not in liar_in_thread.commands and b"QUIT" not in liar_in_thread.commands

"""A hostile upstream that announces a small message in LIST and then streams a huge one.
Before the cap, the client buffered whatever came until memory ran out; now a multi-line
answer over `max_body` drops the connection with a typed error, and the poller sets that cap
from `max_message_size`, so the mailbox is left as it was and nothing is recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge.poller.poll import max_answer_size
from bridge.pop3.client import POP3Client
from bridge.pop3.errors import RemoteProtocolError
from bridge.testing.fakepop3 import FakePOP3Server, FakeSession, Faults
from tests.security.cli import bridge, write_config
from tests.support.loop import LoopThread

LINE = b"x" * 1000 + b"\r\n"


class LyingServer:
    """The fake server with one small message; RETR then sends `retr_lines` lines of 1 KB
    behind a "100 octets" status line (LIST and STAT tell the truth about the small one)."""

    def __init__(self, retr_lines: int) -> None:
        self.retr_lines = retr_lines
        self.sent = 0  # RETR octets actually written before the client gave up
        self.server = FakePOP3Server(
            [b"Subject: small\r\n\r\nx\r\n"],
            user="u",
            password="p-lying-server",
            faults=Faults(no_capa=True, answer={"RETR": self.retr}),
        )

    async def retr(self, session: FakeSession, args: tuple[str, ...]) -> None:
        await session.send(b"+OK 100 octets\r\n")
        for _ in range(self.retr_lines):
            self.sent += len(LINE)
            await session.send(LINE)
        await session.send(b".\r\n")


@pytest.fixture
async def liar() -> AsyncIterator[LyingServer]:
    liar = LyingServer(retr_lines=3000)  # ~3 MB behind a "100 octets" LIST entry
    async with liar.server:
        yield liar


async def test_client_drops_an_answer_over_max_body(liar: LyingServer) -> None:
    client = await POP3Client.connect(
        "127.0.0.1", liar.server.port, tls="none", max_body=256 * 1024
    )
    await client.login("u", "p-lying-server", allow_plaintext=True)
    with pytest.raises(RemoteProtocolError, match="more than 262144 octets"):
        await client.retrieve(1)
    assert client.closed


async def test_without_a_cap_the_whole_lie_is_buffered(liar: LyingServer) -> None:
    """The control: the same server, no cap, and the client takes all ~3 MB."""
    client = await POP3Client.connect("127.0.0.1", liar.server.port, tls="none")
    await client.login("u", "p-lying-server", allow_plaintext=True)
    assert len(await client.retrieve(1)) == 3000 * len(LINE)
    client.abort()


def test_poller_caps_answers_from_max_message_size() -> None:
    assert max_answer_size(1000) == 2 * 1000 + 1024 * 1024


@pytest.fixture
def liar_in_thread() -> Iterator[LyingServer]:
    with LoopThread() as loop:
        server = LyingServer(retr_lines=20_000)  # ~20 MB streamed after "100 octets"
        loop.call(server.server.start())
        try:
            yield server
        finally:
            loop.call(server.server.stop())


def test_once_against_a_lying_server_fails_cleanly(
    tmp_path: Path, liar_in_thread: LyingServer
) -> None:
    account = {
        "name": "liar",
        "host": "127.0.0.1",
        "port": liar_in_thread.server.port,
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
    verbs = liar_in_thread.server.verbs
    assert "DELE" not in verbs and "QUIT" not in verbs

"""`pop3bridge proxy` under hostile load. 200 sessions run at once against Dovecot while other
clients stall, send garbage, send 1 MB lines, connect and drop in a loop, or pipeline 2,000
commands, and one route's upstream (a fake server) dies in the middle of a RETR. Every
well-behaved session must get byte-exact answers in order, checked against the same commands
sent straight to Dovecot. The proxy's RSS stays bounded (psutil), and it still serves afterwards.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest
import yaml

from bridge.pop3.commands import encode_command, response_kind
from bridge.pop3.errors import POP3Error
from bridge.pop3.events import (
    Command,
    ConnectionClosed,
    DataChunk,
    EndOfMultiline,
    Greeting,
    NeedData,
    StatusResponse,
)
from bridge.pop3.wire import ResponseFramer
from bridge.testing.fakepop3 import FakePOP3Server, Faults
from bridge.testing.samples import generate_messages
from tests.support.dovecot import DovecotServer, DovecotUser, free_port
from tests.support.loop import LoopThread

pytestmark = pytest.mark.dovecot

GOOD_SESSIONS = 200
USERS = 40  # Dovecot allows 10 POP3 sessions per user and IP
MESSAGES = 8
STALLERS = 40
GARBAGE = 30
HUGE_LINES = 8
DROP_LOOPS = 300
PIPELINED = 2000
# About 330 connections are open at the peak (each with its own buffers, TLS state for the
# upstream ones) plus 8 MiB of 1 MB lines: ~80 MiB measured here. Unbounded buffering of the
# 1 MB lines or of 2,000 pipelined answers per session would blow well past this.
MAX_RSS_GROWTH_MIB = 128
DIER = "dier@fake.test"


class Session:
    """A small POP3 client on asyncio streams that keeps each response's exact bytes. The
    project's own ResponseFramer does the framing, since it is role-agnostic by design."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = ResponseFramer()

    @classmethod
    async def open(cls, port: int) -> Session:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        session = cls(reader, writer)
        await session._response()  # the greeting
        return session

    async def _event(self) -> Any:
        while isinstance(event := self.framer.next_event(), NeedData):
            self.framer.receive_data(await self.reader.read(65536))
        return event

    async def _response(self) -> bytes:
        event = await self._event()
        if isinstance(event, ConnectionClosed):
            raise ConnectionError("closed")
        if isinstance(event, Greeting):
            return event.status.raw
        assert isinstance(event, StatusResponse), event
        raw = event.raw
        while self.framer.in_body:
            event = await self._event()
            if isinstance(event, DataChunk | EndOfMultiline):
                raw += event.raw
            else:
                raise ConnectionError(f"unexpected {event!r} inside a response")
        return raw

    async def commands(self, commands: list[Command]) -> list[bytes]:
        """Send them all at once (pipelined) and return each raw response, in order."""
        wire = b""
        for command in commands:
            kind = response_kind(command)
            assert kind is not None
            self.framer.expect(kind)
            wire += encode_command(command)
        self.writer.write(wire)
        await self.writer.drain()
        return [await self._response() for _ in commands]

    async def login(self, name: str, password: str) -> None:
        for command in (Command("USER", (name,)), Command("PASS", (password,))):
            (answer,) = await self.commands([command])
            assert answer.startswith(b"+OK"), answer

    def close(self) -> None:
        self.writer.close()


def script() -> list[Command]:
    return [
        Command("STAT"),
        Command("UIDL"),
        Command("LIST"),
        *[Command("RETR", (str(n),)) for n in range(1, MESSAGES + 1)],
        Command("TOP", ("1", "3")),
    ]


def start_proxy(
    tmp_path: Path, dovecot: DovecotServer, fake_port: int, idle_timeout: float
) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    config = {
        "webhooks": [],
        "proxy": {
            "listeners": [{"name": "pop3", "host": "127.0.0.1", "port": port}],
            "routes": [
                {
                    "match": DIER,
                    "upstream": {"host": "127.0.0.1", "port": fake_port, "tls": "none"},
                },
                {
                    "match": "*",
                    "upstream": {
                        "host": dovecot.host,
                        "port": dovecot.pop3s_port,
                        "tls": "implicit",
                        "ca_file": str(dovecot.ca_file),
                    },
                },
            ],
            "policy": {"idle_timeout": idle_timeout, "max_errors": 1000},
        },
        "ops": {"enabled": False},
        "logging": {"format": "json", "level": "INFO"},
    }
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text(yaml.safe_dump(config))
    log = tmp_path / "proxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "proxy", "--config", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port, log
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the proxy did not listen:\n{log.read_text()[-3000:]}")


@pytest.fixture
def fake_upstream() -> Iterator[FakePOP3Server]:
    with LoopThread() as loop:
        fake = FakePOP3Server(
            generate_messages(3, seed=9, size=200_000),
            user=DIER,
            faults=Faults(drop_after_bytes_in_retr=50_000),
        )
        loop.call(fake.start())
        try:
            yield fake
        finally:
            loop.call(fake.stop())


def stop(proc: subprocess.Popen[bytes]) -> int | None:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return None


async def dier_session(port: int) -> str:
    session = await Session.open(port)
    await session.login(DIER, "password")
    try:
        await session.commands([Command("RETR", ("1",))])
        return "not cut"
    except (ConnectionError, POP3Error):
        return "cut"
    finally:
        session.close()


async def test_proxy_survives_hostile_clients_and_a_dying_upstream(
    tmp_path: Path, dovecot: DovecotServer, fake_upstream: FakePOP3Server
) -> None:
    users: list[DovecotUser] = [dovecot.add_user() for _ in range(USERS)]
    for i, user in enumerate(users):
        dovecot.deliver_many(user, generate_messages(MESSAGES, seed=100 + i, size=4000))
    # The reference: the same commands straight to Dovecot (plain port, same bytes as TLS).
    expected: dict[str, list[bytes]] = {}
    for user in users:
        direct = await Session.open(dovecot.pop3_port)
        await direct.login(user.name, user.password)
        expected[user.name] = await direct.commands(script())
        direct.close()

    proc, port, log = start_proxy(tmp_path, dovecot, fake_upstream.port, idle_timeout=10)
    try:
        ps = psutil.Process(proc.pid)
        rss_start = ps.memory_info().rss
        peak = rss_start
        logins = asyncio.Semaphore(40)  # Dovecot's login processes set this pace, not the proxy

        async def good(i: int) -> None:
            user = users[i % USERS]
            session = await Session.open(port)  # all connect at once and stay connected
            async with logins:
                await session.login(user.name, user.password)
            got = await session.commands(script())
            assert got == expected[user.name], f"session {i}: answers differ from Dovecot's"
            assert await session.commands([Command("QUIT")]) == [b"+OK Logging out.\r\n"]
            session.close()

        async def staller() -> None:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"USER half-a-li")  # and never the rest
            await asyncio.sleep(8)
            writer.close()

        async def garbage(i: int) -> None:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            rng = random.Random(i)
            writer.write(bytes(rng.randrange(256) for _ in range(3000)) + b"\r\nNOOP\r\n")
            await writer.drain()
            await asyncio.sleep(0.5)
            writer.close()

        async def huge_line() -> str:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                assert (await reader.readline()).startswith(b"+OK")  # the greeting
                writer.write(b"USER " + b"x" * (1 << 20) + b"\r\n")
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(1 << 16), 8)
            except ConnectionError:
                return "closed"
            finally:
                writer.close()
            if answer == b"":
                return "closed"
            return "refused" if answer.startswith(b"-ERR") else f"accepted: {answer[:40]!r}"

        async def drop_loop() -> None:
            for _ in range(DROP_LOOPS // 10):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()

        async def pipeliner() -> None:
            session = await Session.open(port)
            await session.login(users[0].name, users[0].password)
            commands = [Command("NOOP") if n % 2 else Command("STAT") for n in range(PIPELINED)]
            answers = await session.commands(commands)
            stat = f"+OK {MESSAGES} ".encode()
            for n, answer in enumerate(answers):  # in order: NOOP and STAT alternate
                assert answer == b"+OK\r\n" if n % 2 else answer.startswith(stat), (n, answer)
            session.close()

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, ps.memory_info().rss)
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        results = await asyncio.gather(
            *(good(i) for i in range(GOOD_SESSIONS)),
            *(staller() for _ in range(STALLERS)),
            *(garbage(i) for i in range(GARBAGE)),
            *(huge_line() for _ in range(HUGE_LINES)),
            *(drop_loop() for _ in range(10)),
            pipeliner(),
            pipeliner(),
            dier_session(port),
            return_exceptions=True,
        )
        sampler.cancel()
        failed = [r for r in results if isinstance(r, BaseException)]
        assert failed == [], failed[:3]
        huge = results[GOOD_SESSIONS + STALLERS + GARBAGE :][:HUGE_LINES]
        assert set(huge) <= {"closed", "refused"}, huge  # never a hang, never accepted
        assert results[-1] == "cut"  # the dead upstream's client saw its answer end
        await good(0)  # and the proxy still serves
        growth = (peak - rss_start) / 2**20
        print(f"proxy RSS {rss_start / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB")
        assert growth < MAX_RSS_GROWTH_MIB, f"the proxy grew by {growth:.0f} MiB"
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        assert stop(proc) == 0, log.read_text()[-3000:]


async def test_client_is_disconnected_when_the_upstream_dies_mid_response(
    tmp_path: Path, dovecot: DovecotServer, fake_upstream: FakePOP3Server
) -> None:
    proc, port, log = start_proxy(tmp_path, dovecot, fake_upstream.port, idle_timeout=4)
    try:
        assert await dier_session(port) == "cut"
    finally:
        stop(proc)
    closes = [
        line
        for line in log.read_text().splitlines()
        if f'"user":"{DIER}"' in line and '"event":"close"' in line
    ]
    assert len(closes) == 1
    assert "idle timeout" not in closes[0], closes[0]


async def test_session_ends_with_the_clients_quit(
    tmp_path: Path, dovecot: DovecotServer, fake_upstream: FakePOP3Server
) -> None:
    user = dovecot.add_user()
    proc, port, log = start_proxy(tmp_path, dovecot, fake_upstream.port, idle_timeout=4)
    try:
        session = await Session.open(port)
        await session.login(user.name, user.password)
        assert (await session.commands([Command("QUIT")]))[0].startswith(b"+OK")
        session.close()
        deadline = time.monotonic() + 8
        closes: list[str] = []
        while not closes and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            closes = [
                line
                for line in log.read_text().splitlines()
                if f'"user":"{user.name}"' in line and '"event":"close"' in line
            ]
    finally:
        stop(proc)
    assert len(closes) == 1
    assert "idle timeout" not in closes[0], closes[0]

"""The proxy under misbehaving peers: one suite for every fault (was two near-identical ones).

In-process, one fault at a time (first half): dying and refusing upstreams, stalling and
flooding clients, half-closes, PROXY protocol edge cases.

`pop3bridge proxy` under hostile load (second half): 200 sessions run at once against Dovecot
while other clients stall, send garbage, send 1 MB lines, connect and drop in a loop, or
pipeline 2,000 commands, and one route's upstream (a fake server) dies in the middle of a RETR.
Every well-behaved session must get byte-exact answers in order, checked against the same
commands sent straight to Dovecot. The proxy's RSS stays bounded (psutil), and it still serves
afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest
import yaml

from bridge.ops import metrics
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
from tests.proxy.support import fetch_all, fixed_config, in_thread, running_proxy
from tests.support.dovecot import DovecotServer, DovecotUser, free_port
from tests.support.loop import LoopThread

pytestmark = pytest.mark.dovecot

# -- one fault at a time, in-process ------------------------------------------------------


def fake_config(port: int, **extra: object) -> dict[str, object]:
    return {
        "listeners": [{"name": "plain", "port": 0}],
        "upstream": {"host": "127.0.0.1", "port": port, "tls": "none"},
        **extra,
    }


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    data = b""
    async with asyncio.timeout(10):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def test_upstream_dies_mid_retr_client_sees_a_closed_connection_not_garbage() -> None:
    mail = [b"Subject: big\r\n\r\n" + b"line of text\r\n" * 5000]
    faults = Faults(drop_after_bytes_in_retr=3000)
    async with (
        FakePOP3Server(mail, faults=faults) as fake,
        running_proxy(fake_config(fake.port)) as proxy,
    ):
        reader, writer = await asyncio.open_connection(*proxy.addresses["plain"])
        writer.write(b"USER user\r\nPASS password\r\nRETR 1\r\n")
        data = await read_until_closed(reader)
        writer.close()
    _, _, body = data.partition(b"\r\n+OK")  # greeting, USER, PASS, then RETR's +OK
    assert data.count(b"+OK") >= 4
    assert not data.endswith(b"\r\n.\r\n")  # never a made-up end of message
    assert b"-ERR" not in body  # nothing spliced into the body
    assert 0 < len(body) < len(mail[0])


async def test_upstream_down_is_sys_temp() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        async with running_proxy(fake_config(port)) as proxy:
            reader, writer = await asyncio.open_connection(*proxy.addresses["plain"])
            data = await read_until_closed(reader)
            writer.close()
    assert data.startswith(b"-ERR [SYS/TEMP]")


async def test_upstream_drop_before_reply_is_sys_temp() -> None:
    async with (
        FakePOP3Server([b"x\r\n"], faults=Faults(stall_on={"STAT": 30})) as fake,
        running_proxy(fake_config(fake.port)) as proxy,
    ):
        reader, writer = await asyncio.open_connection(*proxy.addresses["plain"])
        writer.write(b"USER user\r\nPASS password\r\nSTAT\r\n")
        for _ in range(3):
            await reader.readline()
        async with asyncio.timeout(10):  # STAT reached the upstream (which stalls on it)
            while not any(verb == "STAT" for verb, _ in fake.commands_seen):
                await asyncio.sleep(0.01)
        await fake.stop()  # the upstream goes away while STAT is outstanding
        data = await read_until_closed(reader)
        writer.close()
    assert data == b"-ERR [SYS/TEMP] upstream server connection lost\r\n"


async def test_bad_lines_answered_err_and_session_stays_in_sync(dovecot, dovecot_user) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=21))
    async with running_proxy(fixed_config(dovecot, policy={"max_errors": 10})) as proxy:
        reader, writer = await asyncio.open_connection(*proxy.addresses["plain"])
        await reader.readline()
        writer.write(f"USER {dovecot_user.name}\r\nPASS {dovecot_user.password}\r\n".encode())
        assert (await reader.readline()).startswith(b"+OK")
        assert (await reader.readline()).startswith(b"+OK")
        writer.write(b"STAT\x00\r\nST\rAT\r\nLIST " + b"9" * 300 + b"\r\nSTAT\r\nQUIT\r\n")
        replies = [await reader.readline() for _ in range(5)]
        writer.close()
    assert [r[:4] for r in replies[:3]] == [b"-ERR"] * 3
    assert replies[3].startswith(b"+OK 2 ") and replies[4].startswith(b"+OK")


async def test_stalling_and_flooding_clients_do_not_hurt_a_normal_session(
    dovecot, dovecot_user
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(3, seed=22))
    direct = await in_thread(
        fetch_all, dovecot.host, dovecot.pop3_port, dovecot_user.name, dovecot_user.password
    )
    async with running_proxy(fixed_config(dovecot, policy={"max_errors": 3})) as proxy:
        addr = proxy.addresses["plain"]
        _stall_reader, stall_writer = await asyncio.open_connection(*addr)  # says nothing

        async def flood_long_line() -> int:
            _reader, writer = await asyncio.open_connection(*addr)
            sent = 0
            try:
                for _ in range(64):  # 4 MiB without a line end
                    writer.write(b"A" * 65536)
                    await writer.drain()
                    sent += 65536
            except ConnectionError:
                pass
            writer.close()
            return sent

        async def flood_garbage() -> bytes:
            reader, writer = await asyncio.open_connection(*addr)
            writer.write(b"\x00\xff\r\n" * 1000)
            data = await read_until_closed(reader)
            writer.close()
            return data

        normal, sent, garbage = await asyncio.gather(
            in_thread(fetch_all, *addr, dovecot_user.name, dovecot_user.password),
            flood_long_line(),
            flood_garbage(),
        )
        stall_writer.close()
    assert normal == direct
    assert sent > 0
    # The garbage flood got -ERR for each line up to max_errors, then the door.
    assert garbage.count(b"-ERR") == 3


async def test_per_ip_limit_and_idle_timeout(dovecot) -> None:
    # Two proxies: with one, a loaded machine could let the first session's 0.5 s idle timer
    # end it before the second connection arrives, which would then be let in.
    config = fixed_config(dovecot, policy={"max_connections_per_ip": 1})
    before = metrics.PROXY_SESSIONS.labels("plain")._value.get()
    async with running_proxy(config) as proxy:
        addr = proxy.addresses["plain"]
        reader, writer = await asyncio.open_connection(*addr)
        assert (await reader.readline()).startswith(b"+OK")
        reader2, writer2 = await asyncio.open_connection(*addr)
        refused = await read_until_closed(reader2)
        writer2.close()
        writer.close()
    assert refused.startswith(b"-ERR [SYS/TEMP] too many connections")
    assert metrics.PROXY_SESSIONS.labels("plain")._value.get() == before + 1
    async with running_proxy(fixed_config(dovecot, policy={"idle_timeout": 0.5})) as proxy:
        reader, writer = await asyncio.open_connection(*proxy.addresses["plain"])
        assert (await reader.readline()).startswith(b"+OK")
        idle = await read_until_closed(reader)  # nothing sent for 0.5 s
        writer.close()
    assert idle.startswith(b"-ERR [SYS/TEMP] autologout")


async def test_half_closing_client_gets_every_reply(dovecot, dovecot_user) -> None:
    mail = generate_messages(1, seed=23)
    dovecot.deliver_many(dovecot_user, mail)
    async with running_proxy(fixed_config(dovecot)) as proxy:
        reader, writer = await asyncio.open_connection(*proxy.addresses["plain"])
        writer.write(
            f"USER {dovecot_user.name}\r\nPASS {dovecot_user.password}\r\n".encode()
            + b"RETR 1\r\nQUIT\r\n"
        )
        writer.write_eof()  # like `printf ... | nc`: nothing more to say, still listening
        data = await read_until_closed(reader)
        writer.close()
    assert data.count(b"\r\n+OK") == 4 and b"\r\n.\r\n+OK" in data  # RETR's end, then QUIT's


def proxy_v1(source: str, port: int = 40000) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 {port} 110\r\n".encode()


def proxy_v2(source: str, port: int = 40000) -> bytes:
    body = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 110)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


async def test_proxy_protocol_real_client_address_counts_for_limits(dovecot, dovecot_user) -> None:
    listener = {"proxy_protocol": True}
    config = fixed_config(dovecot, listener=listener, policy={"max_connections_per_ip": 1})
    async with running_proxy(config) as proxy:
        addr = proxy.addresses["plain"]
        sessions = []
        # Header and first command in one segment: the command must survive the header.
        for header in (proxy_v1("203.0.113.1"), proxy_v2("203.0.113.2")):
            reader, writer = await asyncio.open_connection(*addr)
            writer.write(header + f"USER {dovecot_user.name}\r\n".encode())
            assert (await reader.readline()).startswith(b"+OK")  # greeting
            assert (await reader.readline()).startswith(b"+OK")  # USER
            sessions.append(writer)
        reader, writer = await asyncio.open_connection(*addr)  # same real address again
        writer.write(proxy_v1("203.0.113.1", 40001))
        refused = await read_until_closed(reader)
        reader, garbage = await asyncio.open_connection(*addr)
        garbage.write(b"USER bob\r\n")  # no header: not from the balancer
        try:
            dropped = await read_until_closed(reader)
        except ConnectionResetError:  # closed with our unread bytes in its buffer: a reset
            dropped = b""
        for w in (*sessions, writer, garbage):
            w.close()
    assert refused.startswith(b"-ERR [SYS/TEMP] too many connections") and dropped == b""


async def test_proxy_protocol_then_tls_client_hello_in_the_same_segment(
    dovecot, dovecot_user, tls_certs
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(1, seed=24))
    listener = {
        "tls": "implicit",
        "proxy_protocol": True,
        "cert_file": str(tls_certs.cert_file),
        "key_file": str(tls_certs.key_file),
    }
    async with running_proxy(fixed_config(dovecot, listener=listener)) as proxy:
        host, port = proxy.addresses["plain"]

        def fetch() -> bytes:
            raw = socket.create_connection((host, port), timeout=10)
            ctx = tls_certs.client_context()
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
            with contextlib.suppress(ssl.SSLWantReadError):
                tls.do_handshake()
            raw.sendall(proxy_v1("198.51.100.9") + outgoing.read())  # one segment
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    if outgoing.pending:
                        raw.sendall(outgoing.read())
                    incoming.write(raw.recv(65536))
            if outgoing.pending:
                raw.sendall(outgoing.read())
            greeting = b""
            while not greeting.endswith(b"\r\n"):
                try:
                    greeting += tls.read(4096)
                except ssl.SSLWantReadError:
                    incoming.write(raw.recv(65536))
            raw.close()
            return greeting

        greeting = await in_thread(fetch)
    assert greeting.startswith(b"+OK")


# -- under hostile load, `pop3bridge proxy` in its own process -----------------------------

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

    # The default idle timeout: a good session waits (idle) for a login slot for as long as the
    # machine's load makes it, and an autologout then would fail it for no fault of the proxy.
    proc, port, log = start_proxy(tmp_path, dovecot, fake_upstream.port, idle_timeout=600)
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

        goods_done = asyncio.Event()

        async def staller() -> None:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"USER half-a-li")  # and never the rest, while the good ones run
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(goods_done.wait(), 120)
            writer.close()

        async def garbage(i: int) -> None:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            rng = random.Random(i)
            writer.write(bytes(rng.randrange(256) for _ in range(3000)) + b"\r\nNOOP\r\n")
            await writer.drain()
            await asyncio.sleep(0.5)  # the stimulus: hang up a moment later, answers unread
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
        goods = asyncio.gather(*(good(i) for i in range(GOOD_SESSIONS)), return_exceptions=True)
        goods.add_done_callback(lambda _: goods_done.set())
        results = await asyncio.gather(
            goods,
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
        results = [*results[0], *results[1:]]  # the good sessions' results first, one each
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
    # Far longer than the test needs: the close must come from the event, and a loaded
    # machine must not let the idle timer win (a proxy that missed the event would then
    # close on idle, which the reason check below catches).
    proc, port, log = start_proxy(tmp_path, dovecot, fake_upstream.port, idle_timeout=60)
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
    # Far longer than the test needs: the close must come from the event, and a loaded
    # machine must not let the idle timer win (a proxy that missed the event would then
    # close on idle, which the reason check below catches).
    proc, port, log = start_proxy(tmp_path, dovecot, fake_upstream.port, idle_timeout=60)
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

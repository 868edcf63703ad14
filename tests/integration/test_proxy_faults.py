"""The proxy under misbehaving peers: dying upstreams, stalling and flooding clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct

import pytest

from bridge.ops import metrics
from bridge.testing.fakepop3 import FakePOP3Server, Faults
from bridge.testing.samples import generate_messages
from tests.integration.proxy_support import fetch_all, fixed_config, in_thread, running_proxy

pytestmark = pytest.mark.dovecot


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
        await asyncio.sleep(0.2)
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
    config = fixed_config(dovecot, policy={"max_connections_per_ip": 1, "idle_timeout": 0.5})
    before = metrics.PROXY_SESSIONS.labels("plain")._value.get()
    async with running_proxy(config) as proxy:
        addr = proxy.addresses["plain"]
        reader, writer = await asyncio.open_connection(*addr)
        assert (await reader.readline()).startswith(b"+OK")
        reader2, writer2 = await asyncio.open_connection(*addr)
        refused = await read_until_closed(reader2)
        writer2.close()
        idle = await read_until_closed(reader)  # nothing sent for 0.5 s
        writer.close()
    assert refused.startswith(b"-ERR [SYS/TEMP] too many connections")
    assert idle.startswith(b"-ERR [SYS/TEMP] autologout")
    assert metrics.PROXY_SESSIONS.labels("plain")._value.get() == before + 1


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

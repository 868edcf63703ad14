"""A listener behind a load balancer (`proxy_protocol: true`) in front of the real Dovecot:
logs and per-IP limits see the address from the PROXY header, bytes sent right after the header
reach the POP3 session, and a connection without a header never reaches the upstream."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import struct
from typing import Any

import pytest

from bridge.proxy.proxy_protocol import V2_SIGNATURE
from tests.proxy.support import fixed_config, running_proxy

pytestmark = pytest.mark.dovecot


def v2_header(source: str, sport: int, dest: str = "198.51.100.1", dport: int = 110) -> bytes:
    body = ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address(dest).packed
    body += struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body


async def open_behind_balancer(
    host: str, port: int, header: bytes, first: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(header + first)  # one segment, as balancers often send it
    await writer.drain()
    return reader, writer


async def login(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, user: Any) -> bytes:
    writer.write(f"USER {user.name}\r\nPASS {user.password}\r\nSTAT\r\n".encode())
    await writer.drain()
    lines = [await asyncio.wait_for(reader.readline(), 10) for _ in range(3)]
    return b"".join(lines)


def opened_clients(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        str(getattr(r, "client", ""))
        for r in caplog.records
        if r.getMessage() == "proxy session opened"
    ]


async def test_logs_and_limits_see_the_address_from_the_header(
    dovecot: Any, dovecot_user: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.proxy")
    config = fixed_config(
        dovecot, listener={"proxy_protocol": True}, policy={"max_connections_per_ip": 1}
    )
    async with running_proxy(config) as proxy:
        host, port = proxy.addresses["plain"]
        # v1 header with the greeting-independent commands right behind it in the same write.
        r1, w1 = await open_behind_balancer(
            host, port, b"PROXY TCP4 203.0.113.7 198.51.100.1 40001 110\r\n"
        )
        assert (await asyncio.wait_for(r1.readline(), 10)).startswith(b"+OK")
        answers = await login(r1, w1, dovecot_user)
        assert answers.count(b"+OK") == 3, answers
        # Another client of the same balancer, a different real address: allowed.
        r2, w2 = await open_behind_balancer(host, port, v2_header("203.0.113.8", 40002))
        assert (await asyncio.wait_for(r2.readline(), 10)).startswith(b"+OK")
        # The first client's address again while it still has a session: over the limit.
        r3, w3 = await open_behind_balancer(host, port, v2_header("203.0.113.7", 40003))
        refused = await asyncio.wait_for(r3.readline(), 10)
        assert refused.startswith(b"-ERR") and b"too many" in refused
        for w in (w1, w2, w3):
            w.close()
    clients = opened_clients(caplog)
    assert "203.0.113.7:40001" in clients and "203.0.113.8:40002" in clients
    assert not any(c.startswith("127.0.0.1") for c in clients)


async def test_first_command_in_the_header_segment_reaches_the_session(
    dovecot: Any, dovecot_user: Any
) -> None:
    config = fixed_config(dovecot, listener={"proxy_protocol": True})
    async with running_proxy(config) as proxy:
        host, port = proxy.addresses["plain"]
        reader, writer = await open_behind_balancer(
            host, port, v2_header("192.0.2.44", 50000), first=b"CAPA\r\n"
        )
        try:
            assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"+OK")
            capa = await asyncio.wait_for(reader.readuntil(b"\r\n.\r\n"), 10)
            assert capa.startswith(b"+OK") and b"UIDL" in capa
        finally:
            writer.close()


@pytest.mark.parametrize(
    "junk",
    [
        b"USER alice\r\n",  # a client that bypassed the balancer
        b"PROXY TCP4 203.0.113.7 198.51.100.1 99999 110\r\n",  # port out of range
        V2_SIGNATURE + b"\x21\x11\xff\xff",  # over the 4096-byte cap
    ],
)
async def test_a_connection_without_a_valid_header_is_closed(
    dovecot: Any, junk: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.proxy")
    config = fixed_config(dovecot, listener={"proxy_protocol": True})
    async with running_proxy(config) as proxy:
        host, port = proxy.addresses["plain"]
        reader, writer = await open_behind_balancer(host, port, junk)
        try:
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, no greeting
        finally:
            writer.close()
    assert opened_clients(caplog) == []
    assert "alice" not in caplog.text


async def test_implicit_tls_listener_with_the_client_hello_in_the_header_segment(
    dovecot: Any, dovecot_user: Any, tls_certs: Any
) -> None:
    listener = {
        "proxy_protocol": True,
        "tls": "implicit",
        "cert_file": str(tls_certs.cert_file),
        "key_file": str(tls_certs.key_file),
    }
    config = fixed_config(dovecot, listener=listener)
    async with running_proxy(config) as proxy:
        host, port = proxy.addresses["plain"]
        context = ssl.create_default_context(cafile=str(tls_certs.ca_file))
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        reader, writer = await open_behind_balancer(host, port, v2_header("192.0.2.9", 1), hello)
        try:
            answer = await asyncio.wait_for(reader.read(5), 10)
            assert answer[:1] == b"\x16"  # a TLS handshake record (ServerHello) came back
        finally:
            writer.close()

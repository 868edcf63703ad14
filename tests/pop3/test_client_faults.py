"""POP3Client against scripted misbehaving servers: hang-ups, garbage, stalls, resp-codes,
no UIDL, bare LF, huge lines, STLS stripping, pre-TLS injection, tiny socket buffers.

The servers are small asyncio servers defined here: each maps a received command line to the
bytes to answer (None hangs up), so each test states exactly what the server does.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from bridge.mail import header_uid
from bridge.pop3.client import POP3Client
from bridge.pop3.errors import (
    AuthenticationFailed,
    ConnectionLost,
    ReadTimeout,
    RemoteProtocolError,
    ResponseError,
    TemporaryFailure,
    TLSFailure,
)
from bridge.pop3.wire import dot_stuff
from tests.support.wait import wait_until

Answer = bytes | None | float | tuple[bytes, str]
Responder = Callable[[bytes], Answer]
HOST = "127.0.0.1"


class Received(list[bytes]):
    """The command lines the server got, in order; `open` counts live connections."""

    open = 0

    async def hung_up(self) -> None:
        """Wait until every connection has ended: nothing more can be received after that."""
        await wait_until(lambda: self.open == 0, what="the client closed its connection")


@asynccontextmanager
async def server(
    respond: Responder, greeting: bytes = b"+OK ready\r\n", sndbuf: int | None = None
) -> AsyncIterator[tuple[int, Received]]:
    received = Received()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.open += 1
        if sndbuf:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
        writer.write(greeting)
        try:
            while line := await reader.readline():
                received.append(line)
                answer = respond(line.rstrip(b"\r\n"))
                if isinstance(answer, float):
                    await asyncio.sleep(answer)  # the stimulus: a stall, then no answer
                    continue
                if answer is None:
                    break
                if isinstance(answer, tuple):  # answer, then hang up
                    writer.write(answer[0])
                    await writer.drain()
                    break
                writer.write(answer)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            received.open -= 1
            writer.close()

    srv = await asyncio.start_server(handle, HOST, 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield port, received
    finally:
        srv.close()


def basic(extra: dict[bytes, Answer] | None = None, caps: bytes = b"USER\r\nUIDL\r\n"):
    table: dict[bytes, Answer] = {
        b"CAPA": b"+OK\r\n" + caps + b".\r\n",
        b"USER u": b"+OK\r\n",
        b"PASS p": b"+OK in\r\n",
        b"QUIT": b"+OK bye\r\n",
        b"STAT": b"+OK 1 10\r\n",
    }
    table.update(extra or {})

    def respond(line: bytes) -> Answer:
        return table.get(line, b"-ERR unknown\r\n")

    return respond


async def connect(port: int, **kw: object) -> POP3Client:
    kw.setdefault("tls", "none")
    kw.setdefault("read_timeout", 5.0)
    return await POP3Client.connect(HOST, port, **kw)  # type: ignore[arg-type]


async def login(port: int, **kw: object) -> POP3Client:
    client = await connect(port, **kw)
    await client.login("u", "p", mechanism="USER", allow_plaintext=True)
    return client


async def test_hang_up_mid_retr() -> None:
    async with server(basic({b"RETR 1": (b"+OK\r\npartial body", "close")})) as (port, _):
        client = await login(port)
        with pytest.raises(ConnectionLost, match="middle"):
            await client.retrieve(1)
        client.abort()


async def test_garbage_greeting() -> None:
    async with server(basic(), greeting=b"HTTP/1.1 400 Bad Request\r\n") as (port, _):
        with pytest.raises(RemoteProtocolError, match=r"\+OK or -ERR"):
            await connect(port)


async def test_plus_err_is_not_success() -> None:
    async with server(basic({b"PASS p": b"+ERR nope\r\n"})) as (port, _):
        client = await connect(port)
        # "+ERR" is neither +OK nor -ERR: the server broke the protocol, we did not log in.
        with pytest.raises(RemoteProtocolError, match=r"\+ERR"):
            await client.login("u", "p", mechanism="USER", allow_plaintext=True)
        assert client.mechanism is None
        client.abort()


async def test_stall_raises_read_timeout() -> None:
    async with server(basic({b"STAT": 3.0})) as (port, _):
        client = await login(port, read_timeout=0.3)
        with pytest.raises(ReadTimeout):
            await client.stat()
        client.abort()


async def test_in_use_is_temporary() -> None:
    async with server(basic({b"PASS p": b"-ERR [IN-USE] maildrop locked\r\n"})) as (port, _):
        client = await connect(port)
        with pytest.raises(TemporaryFailure) as info:
            await client.login("u", "p", mechanism="USER", allow_plaintext=True)
        assert info.value.status is not None and info.value.status.has_code("IN-USE")
        client.abort()


async def test_login_delay_uses_capa_hint() -> None:
    caps = b"USER\r\nLOGIN-DELAY 900\r\n"
    async with server(basic({b"PASS p": b"-ERR [LOGIN-DELAY] wait\r\n"}, caps)) as (port, _):
        client = await connect(port)
        with pytest.raises(TemporaryFailure) as info:
            await client.login("u", "p", mechanism="USER", allow_plaintext=True)
        assert info.value.retry_after == 900
        client.abort()


async def test_auth_code_and_sys_perm() -> None:
    async with server(basic({b"RETR 1": b"-ERR [SYS/PERM] disk broken\r\n"})) as (port, _):
        from bridge.pop3.errors import PermanentFailure

        client = await login(port)
        with pytest.raises(PermanentFailure):
            await client.retrieve(1)
        client.abort()


async def test_eof_after_pass_is_authentication_failed() -> None:
    async with server(basic({b"PASS p": None})) as (port, _):
        client = await connect(port)
        with pytest.raises(AuthenticationFailed, match="closed"):
            await client.login("u", "p", mechanism="USER", allow_plaintext=True)
        client.abort()


async def test_no_uidl_falls_back_to_header_ids() -> None:
    m1 = b"Message-ID: <a@x>\r\nSubject: one\r\n\r\n"
    m2 = b"Message-ID: <b@x>\r\nSubject:  two\r\n folded\r\n\r\n"
    table = {
        b"UIDL": b"-ERR not supported\r\n",
        b"LIST": b"+OK\r\n1 10\r\n2 20\r\n.\r\n",
        b"TOP 1 0": b"+OK\r\n" + dot_stuff(m1),
        b"TOP 2 0": b"+OK\r\n" + dot_stuff(m2),
    }
    async with server(basic(table, caps=b"USER\r\n")) as (port, _):
        client = await login(port)
        uidls = await client.uidl(header_id=header_uid)
        assert client.uidl_fallback
        assert uidls == [(1, header_uid(m1)), (2, header_uid(m2))]
        assert uidls[0][1].startswith("hdr-") and len(uidls[0][1]) <= 70
        # Folding and white-space runs do not change the id.
        assert header_uid(b"Subject: two folded\r\nMessage-ID: <b@x>\r\n\r\n") == uidls[1][1]
        client.abort()


async def test_duplicate_and_odd_uidls_tolerated() -> None:
    body = b"1 same\r\n2 same\r\n3    " + b"L" * 90 + b"\r\n"
    async with server(basic({b"UIDL": b"+OK\r\n" + body + b".\r\n"})) as (port, _):
        client = await login(port)
        assert await client.uidl() == [(1, "same"), (2, "same"), (3, "L" * 90)]
        client.abort()


async def test_bare_lf_server() -> None:
    message = b"Subject: lf\n\n.dotted\nbody\n"
    table = {
        b"CAPA": b"+OK\nUSER\n.\n",
        b"USER u": b"+OK\n",
        b"PASS p": b"+OK\n",
        b"RETR 1": b"+OK\n" + message.replace(b"\n.", b"\n..") + b".\n",
    }
    async with server(basic(table), greeting=b"+OK lf server\n") as (port, _):
        client = await login(port)
        assert client.greeting.bare_lf
        assert await client.retrieve(1) == message
        client.abort()


async def test_huge_body_line() -> None:
    message = b"Subject: big\r\n\r\n" + b"x" * 3_000_000 + b"\r\n"
    async with server(basic({b"RETR 1": b"+OK\r\n" + dot_stuff(message)})) as (port, _):
        client = await login(port)
        assert await client.retrieve(1) == message
        client.abort()


async def test_huge_status_line_is_a_protocol_error() -> None:
    async with server(basic({b"STAT": b"+OK " + b"9" * 20_000 + b"\r\n"})) as (port, _):
        client = await login(port)
        with pytest.raises(RemoteProtocolError, match="longer than"):
            await client.stat()
        client.abort()


async def test_flood_of_stray_lfs_is_a_protocol_error() -> None:
    # Was RecursionError: the framer recursed once per stray LF before a status line.
    flood = b"\n" * 5000 + b"+OK 1 10\r\n"
    async with server(basic({b"STAT": flood})) as (port, _):
        client = await login(port)
        with pytest.raises(RemoteProtocolError, match="stray line feeds"):
            await client.stat()
        client.abort()


async def test_a_few_stray_lfs_are_skipped() -> None:
    async with server(basic({b"STAT": b"\n\n+OK 1 10\r\n"})) as (port, _):
        client = await login(port)
        assert await client.stat() == (1, 10)
        client.abort()


async def test_stls_stripped_from_capa_fails_closed() -> None:
    async with server(basic()) as (port, received):
        with pytest.raises(TLSFailure, match="does not offer STLS"):
            await POP3Client.connect(HOST, port, tls="starttls", read_timeout=5.0)
        await received.hung_up()
        assert not any(line.startswith((b"USER", b"PASS", b"AUTH")) for line in received)


async def test_stls_refused_fails_closed() -> None:
    caps = b"USER\r\nSTLS\r\n"
    async with server(basic({b"STLS": b"-ERR not now\r\n"}, caps)) as (port, received):
        with pytest.raises(ResponseError, match="not now"):  # the server's -ERR, typed
            await POP3Client.connect(HOST, port, tls="starttls", read_timeout=5.0)
        await received.hung_up()  # and the connection is closed, nothing sent after STLS
        assert not any(line.startswith((b"USER", b"PASS")) for line in received)


async def test_stls_reply_with_injected_data_is_refused() -> None:
    caps = b"USER\r\nSTLS\r\n"
    injected = b"+OK begin TLS\r\n+OK\r\nSASL PLAIN\r\n.\r\n"
    async with server(basic({b"STLS": injected}, caps)) as (port, _):
        with pytest.raises(RemoteProtocolError, match="STLS"):
            await POP3Client.connect(HOST, port, tls="starttls", read_timeout=5.0)


async def test_plaintext_credentials_refused_without_tls() -> None:
    from bridge.pop3.errors import InsecureAuthRefused

    async with server(basic()) as (port, received):
        client = await connect(port)
        with pytest.raises(InsecureAuthRefused):
            await client.login("u", "p")
        client.abort()
        await received.hung_up()
        assert not any(line.startswith((b"USER", b"PASS")) for line in received)


async def test_thousand_pipelined_retrs_with_tiny_buffers() -> None:
    messages = {n: b"Subject: %d\r\n\r\n" % n + b"y" * 3000 + b"\r\n" for n in range(1, 1001)}
    table: dict[bytes, Answer] = {
        b"RETR %d" % n: b"+OK\r\n" + dot_stuff(m) for n, m in messages.items()
    }
    caps = b"USER\r\nUIDL\r\nPIPELINING\r\n"
    async with server(basic(table, caps), sndbuf=2048) as (port, _):
        client = await login(port, window=100)
        assert client.pipelining
        got = {}
        async with asyncio.timeout(60):
            async for n, body in client.retrieve_many(range(1, 1001)):
                got[n] = body
        assert got == messages
        await client.quit()


async def test_pipelining_switch_off() -> None:
    caps = b"USER\r\nPIPELINING\r\n"
    table = {b"RETR 1": b"+OK\r\n" + dot_stuff(b"a"), b"RETR 2": b"+OK\r\n" + dot_stuff(b"b")}
    async with server(basic(table, caps)) as (port, _):
        client = await login(port, pipelining=False)
        assert not client.pipelining
        assert [n async for n, _ in client.retrieve_many([1, 2])] == [1, 2]
        client.abort()


async def test_pipelined_error_aborts_without_commit() -> None:
    caps = b"USER\r\nPIPELINING\r\n"
    table = {b"RETR 1": b"+OK\r\n" + dot_stuff(b"a"), b"RETR 2": b"-ERR gone\r\n"}
    async with server(basic(table, caps)) as (port, received):
        client = await login(port)
        with pytest.raises(ResponseError, match="gone"):
            async for _ in client.retrieve_many([1, 2, 3]):
                pass
        assert client.closed
        await received.hung_up()
        assert b"QUIT\r\n" not in received

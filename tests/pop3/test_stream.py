"""`bridge.pop3.stream.StreamProtocol` directly, over a socket pair: what the client and both
proxy legs rely on (buffered reads, EOF, half-close, back-pressure both ways, typed errors)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from bridge.pop3.errors import ConnectionLost, ReadTimeout
from bridge.pop3.stream import StreamProtocol
from tests.support.wait import wait_until


class Pair:
    """Our end (`proto`) over a socket pair; the peer is a plain non-blocking socket."""

    def __init__(self, proto: StreamProtocol, peer: socket.socket) -> None:
        self.proto, self.peer = proto, peer
        self.loop = asyncio.get_running_loop()

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.peer, data)

    async def recv_all(self) -> bytes:
        data = b""
        while chunk := await self.loop.sock_recv(self.peer, 65536):
            data += chunk
        return data


async def pair(read_timeout: float | None = 5.0, **kw: object) -> Pair:
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    proto = StreamProtocol(read_timeout, **kw)  # type: ignore[arg-type]
    await asyncio.get_running_loop().connect_accepted_socket(lambda: proto, ours)
    return Pair(proto, peer)


@pytest.fixture
async def p() -> AsyncIterator[Pair]:
    pr = await pair()
    yield pr
    pr.peer.close()
    if pr.proto.transport is not None:
        pr.proto.transport.abort()


async def test_a_read_of_one_chunk_hands_it_over_uncopied() -> None:
    # The fetch stage's reads are mostly one chunk each: it is returned as it came, and
    # several are joined once (a bytearray buffer copied every byte in and out again).
    proto = StreamProtocol(5.0)
    chunk = b"+OK 5000 octets\r\n" + b"x" * 5000
    proto.data_received(chunk)
    assert proto.buffered() == len(chunk)
    assert await proto.read() is chunk
    assert proto.buffered() == 0
    proto.data_received(b"+OK a\r\n")
    proto.data_received(b"+OK b\r\n")
    assert proto.buffered() == 14
    assert await proto.read() == b"+OK a\r\n+OK b\r\n"
    assert proto.buffered() == 0


async def test_read_returns_what_arrived_then_empty_bytes_at_eof(p: Pair) -> None:
    await p.send(b"+OK one\r\n")
    await p.send(b"+OK two\r\n")
    await wait_until(lambda: p.proto.buffered() == 18)
    assert await p.proto.read() == b"+OK one\r\n+OK two\r\n"  # one read, everything so far
    assert p.proto.buffered() == 0
    p.peer.shutdown(socket.SHUT_WR)
    assert await p.proto.read() == b""
    assert await p.proto.read() == b""  # and again: EOF stays EOF


async def test_a_silent_peer_is_a_read_timeout() -> None:
    pr = await pair(read_timeout=0.05)
    try:
        with pytest.raises(ReadTimeout, match=r"sent nothing for 0\.05 s"):
            await pr.proto.read()
        await pr.send(b"late\r\n")  # the timed-out read left the protocol usable
        assert await pr.proto.read() == b"late\r\n"
    finally:
        pr.peer.close()


async def test_each_read_gets_its_whole_timeout_from_the_one_connection_timer() -> None:
    # The timer armed by the first read fires before the second read's deadline: it must
    # re-arm for that deadline, not fail the read early (only a lower bound is asserted).
    pr = await pair(read_timeout=0.2)
    loop = asyncio.get_running_loop()
    try:
        await pr.send(b"+OK\r\n")
        assert await pr.proto.read() == b"+OK\r\n"
        await asyncio.sleep(0.1)
        started = loop.time()
        with pytest.raises(ReadTimeout, match=r"sent nothing for 0\.2 s"):
            await pr.proto.read()
        assert loop.time() - started >= 0.2 - 0.01
    finally:
        pr.peer.close()


async def test_a_closed_connection_leaves_no_read_timer_behind(p: Pair) -> None:
    # An armed timer holds the protocol; at 10,000 polls a minute, leaving it for the full
    # read_timeout would keep thousands of closed connections in memory.
    reading = asyncio.ensure_future(p.proto.read())
    await wait_until(lambda: p.proto._timer is not None)
    p.peer.close()
    assert await reading == b""
    assert p.proto._timer is None


async def test_reading_pauses_over_a_mebibyte_unread_and_resumes_on_read(p: Pair) -> None:
    transport = p.proto.transport
    assert transport is not None and transport.is_reading()
    await p.send(b"x" * (1 << 20) + b"y" * 70_000)
    await wait_until(lambda: not transport.is_reading(), what="reading paused")
    got = await p.proto.read()
    assert transport.is_reading()
    while len(got) < (1 << 20) + 70_000:
        got += await p.proto.read()
    assert got == b"x" * (1 << 20) + b"y" * 70_000


async def test_half_close_keeps_the_write_side_open_after_the_peers_eof() -> None:
    for half_close in (True, False):
        pr = await pair(half_close=half_close)
        try:
            await pr.send(b"QUIT\r\n")
            pr.peer.shutdown(socket.SHUT_WR)
            assert await pr.proto.read() == b"QUIT\r\n"
            assert await pr.proto.read() == b""
            if half_close:
                pr.proto.write(b"+OK bye\r\n")  # the reply still reaches the peer
                assert pr.proto.transport is not None
                pr.proto.transport.close()
                assert await pr.recv_all() == b"+OK bye\r\n"
            else:
                transport = pr.proto.transport
                assert transport is not None
                await wait_until(transport.is_closing)  # the peer's EOF closed it
                with pytest.raises(ConnectionLost, match="closed"):
                    pr.proto.write(b"+OK bye\r\n")
        finally:
            pr.peer.close()


async def test_a_reset_connection_is_connection_lost_not_eof(p: Pair) -> None:
    # Linger 0: close() sends RST, so our end sees an error rather than a clean EOF.
    p.peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    p.proto.write(b"+OK\r\n")  # unread by the peer: its close must reset
    await wait_until(lambda: _readable(p.peer))
    p.peer.close()
    with pytest.raises(ConnectionLost, match="connection failed"):
        await p.proto.read()


def _readable(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


async def test_drain_waits_for_a_slow_peer_and_times_out_on_a_stuck_one() -> None:
    pr = await pair(read_timeout=0.2)
    try:
        assert pr.proto.transport is not None
        pr.proto.transport.set_write_buffer_limits(high=64 * 1024)
        chunk = b"z" * 65536
        while not pr.proto.writing_paused:  # the peer reads nothing: buffers fill up
            pr.proto.write(chunk)
            await asyncio.sleep(0)
        with pytest.raises(ReadTimeout, match=r"accepted no data for 0\.2 s"):
            await pr.proto.drain()
        reader = asyncio.ensure_future(pr.recv_all())  # now the peer reads everything
        await pr.proto.drain()
        assert not pr.proto.writing_paused
        pr.proto.transport.close()
        assert len(await reader) % len(chunk) == 0
    finally:
        pr.peer.close()

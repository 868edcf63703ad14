"""The two reference POP3 clients: a raw pipelined loop (the ceiling) and poplib (sequential).

Both fetch messages 1..n and return the elapsed time and the bytes received, and both check
they really got n complete responses, so a broken server or proxy cannot look fast. They run
against Dovecot directly, through nginx and through `pop3bridge proxy` alike.
"""

from __future__ import annotations

import poplib
import socket
import time

__all__ = ["ClientFailed", "poplib_sequential", "raw_pipelined"]

_END = b"\r\n.\r\n"


class ClientFailed(RuntimeError):
    """A reference client did not get what it asked for (wrong count, -ERR, early close)."""


def _read_line(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ClientFailed("connection closed while waiting for a response line")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\r\n")
    buf[:] = rest
    return line


def _command(sock: socket.socket, buf: bytearray, line: bytes) -> bytes:
    sock.sendall(line + b"\r\n")
    reply = _read_line(sock, buf)
    if not reply.startswith(b"+OK"):
        raise ClientFailed(f"{line.split()[0].decode()} refused: {reply[:80]!r}")
    return reply


def raw_pipelined(
    host: str, port: int, user: str, password: str, n: int, *, timeout: float = 60.0
) -> tuple[float, int]:
    """RETR 1..n all written at once on one connection; counts terminators, no unstuffing.

    The clock starts before connecting and stops after QUIT's reply, like every contender.
    A terminator is CRLF "." CRLF: dot-stuffing guarantees it never occurs inside a body.
    """
    start = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        if not _read_line(sock, buf).startswith(b"+OK"):
            raise ClientFailed("no +OK greeting")
        _command(sock, buf, b"USER " + user.encode())
        _command(sock, buf, b"PASS " + password.encode())
        sock.sendall(b"".join(b"RETR %d\r\n" % i for i in range(1, n + 1)))
        seen = 0
        total = len(buf)
        tail = bytes(buf)
        while seen < n:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ClientFailed(f"connection closed after {seen} of {n} messages")
            total += len(chunk)
            window = tail + chunk
            seen += window.count(_END)
            tail = window[-4:]
        if seen != n:
            raise ClientFailed(f"expected {n} responses, saw {seen}")
        _command(sock, bytearray(), b"QUIT")
    return time.perf_counter() - start, total


def poplib_sequential(
    host: str, port: int, user: str, password: str, n: int, *, timeout: float = 60.0
) -> tuple[float, int]:
    """The standard library's client, one RETR at a time (what most scripts do)."""
    start = time.perf_counter()
    client = poplib.POP3(host, port, timeout=timeout)
    total = 0
    try:
        client.user(user)
        client.pass_(password)
        for i in range(1, n + 1):
            _, lines, octets = client.retr(i)
            if not lines:
                raise ClientFailed(f"message {i} came back empty")
            total += octets
        client.quit()
    except poplib.error_proto as exc:
        raise ClientFailed(f"poplib: {exc}") from exc
    return time.perf_counter() - start, total

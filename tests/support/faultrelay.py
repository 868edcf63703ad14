"""A fault-injecting TCP relay for POP3: put it in front of a real server and break sessions.

Dovecot is the reference server, but it will not drop a connection half-way through a RETR,
stall, or claim its maildrop is locked on cue. This relay forwards a plaintext POP3 session
byte for byte and, for the connections a test queues a `RelayFault` for, does exactly one of:

- ``cut``: after the client sends the given command (``RETR``, ``UIDL``, ...), relay
  `after_bytes` more bytes of the server's answer, then close both legs;
- ``stall``: after that command, hold the server's next bytes back for `seconds` (longer than
  the client's read timeout turns this into a timeout on the client side);
- ``login_error``: answer the credentials command (PASS, APOP or AUTH) with `status` itself,
  e.g. ``-ERR [IN-USE] ...`` or ``-ERR [SYS/TEMP] ...``, without forwarding it, then close;
- ``strip_stls``: a downgrade attack. The ``STLS`` line is removed from the server's CAPA answer
  and an ``STLS`` command is answered ``-ERR`` by the relay, so the client never gets TLS.

It watches only command lines on the client leg and counts bytes on the server leg: it needs no
response framing, which keeps it independent of the code under test. Because commands may be
pipelined, "cut after N bytes of the RETR response" is approximate: the N bytes start after the
RETR left the client, and may include the tail of an earlier pipelined response. For a fault
test that is what matters: the connection dies while a multi-line answer is in flight.

It speaks no TLS; point it at the server's plaintext port. After a relayed STLS it passes the
encrypted bytes through unread (and a fault can no longer fire on that session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from dataclasses import dataclass
from typing import Literal

from bridge.lifecycle import Service

__all__ = ["FaultRelay", "RelayFault"]

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_LOGIN_VERBS = frozenset({"PASS", "APOP", "AUTH"})


@dataclass(frozen=True)
class RelayFault:
    """One fault for one connection (see the module docstring for the kinds)."""

    kind: Literal["cut", "stall", "login_error", "strip_stls"]
    verb: str = "RETR"
    after_bytes: int = 0
    seconds: float = 0.0
    status: str = "-ERR [IN-USE] maildrop is locked by another session"

    @property
    def label(self) -> str:
        if self.kind == "strip_stls":
            return self.kind
        if self.kind == "login_error":
            return "login_error " + self.status.split()[1] if " " in self.status else self.kind
        return f"{self.kind} {self.verb}"


class _Session:
    def __init__(self, fault: RelayFault | None) -> None:
        self.fault = fault
        self.armed_at: int | None = None  # server bytes relayed when the command went out
        self.verbs: list[str] = []  # every command verb the client sent, forwarded or not
        self.encrypted = False  # STLS was relayed: from then on bytes pass through unread
        self.relayed = 0  # server -> client bytes so far
        self.fired = False


class FaultRelay(Service):
    """``async with FaultRelay(host, port) as relay:`` listens on 127.0.0.1:`relay.port`.

    `queue(fault, ...)` hands faults to the next connections, first queued first used;
    `applied` counts the faults that actually fired (a queued fault whose trigger never came,
    say a ``cut RETR`` on a session with no new mail, is not counted).
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__()
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self.port = port
        self.connections = 0
        self.applied: Counter[str] = Counter()
        self.sessions: list[list[str]] = []  # per connection: the client's command verbs
        self._queued: deque[RelayFault] = deque()
        self._server: asyncio.Server | None = None

    # -- control ----------------------------------------------------------------------------
    def queue(self, *faults: RelayFault) -> None:
        self._queued.extend(faults)

    def clear(self) -> None:
        self._queued.clear()

    @property
    def pending(self) -> int:
        return len(self._queued)

    # -- lifecycle (bridge.lifecycle.Service: start / ready / stop) -------------------------
    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self, grace: float | None) -> None:
        if self._server is not None:
            self._server.close()

    async def _finish(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.wait_closed()

    # -- one connection ---------------------------------------------------------------------
    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.track(task)
        self.connections += 1
        session = _Session(self._queued.popleft() if self._queued else None)
        self.sessions.append(session.verbs)
        u_writer: asyncio.StreamWriter | None = None
        try:
            try:
                u_reader, u_writer = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port
                )
            except OSError:
                return  # upstream down: the client sees the connection close, as without us
            legs = [
                asyncio.create_task(self._client_leg(session, c_reader, c_writer, u_writer)),
                asyncio.create_task(self._server_leg(session, u_reader, c_writer)),
            ]
            try:
                await asyncio.wait(legs, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for leg in legs:
                    leg.cancel()
                await asyncio.gather(*legs, return_exceptions=True)
        except asyncio.CancelledError:
            pass
        finally:
            for writer in (c_writer, u_writer):
                if writer is not None:
                    writer.close()

    async def _client_leg(
        self,
        session: _Session,
        reader: asyncio.StreamReader,
        c_writer: asyncio.StreamWriter,
        u_writer: asyncio.StreamWriter,
    ) -> None:
        fault = session.fault
        buf = b""
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                return
            if session.encrypted:  # after STLS: TLS records, nothing to read
                u_writer.write(data)
                await u_writer.drain()
                continue
            buf += data
            out = bytearray()
            while not session.encrypted and (end := buf.find(b"\n")) >= 0:
                line, buf = buf[: end + 1], buf[end + 1 :]
                verb = line.split(b" ", 1)[0].strip().upper().decode("ascii", "replace")
                session.verbs.append(verb)
                if fault is not None and fault.kind == "strip_stls" and verb == "STLS":
                    u_writer.write(bytes(out))
                    out.clear()
                    c_writer.write(b"-ERR command not recognised\r\n")
                    await c_writer.drain()
                    self._fire(session)
                    continue
                if fault is not None and not session.fired:
                    if fault.kind == "login_error" and verb in _LOGIN_VERBS:
                        u_writer.write(bytes(out))
                        c_writer.write(fault.status.encode("ascii") + b"\r\n")
                        await c_writer.drain()
                        self._fire(session)
                        return
                    if (
                        fault.kind != "login_error"
                        and verb == fault.verb.upper()
                        and session.armed_at is None
                    ):
                        session.armed_at = session.relayed
                out += line
                if verb == "STLS":
                    session.encrypted = True  # the rest of the stream (and buf) is TLS
            # No line end in sight (not a command), or TLS from here on: pass it on as it is.
            if len(buf) > _CHUNK or session.encrypted:
                out += buf
                buf = b""
            if out:
                u_writer.write(bytes(out))
                await u_writer.drain()

    async def _server_leg(
        self, session: _Session, reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter
    ) -> None:
        fault = session.fault
        pending = b""  # strip_stls works on whole lines
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                return
            if fault is not None and fault.kind == "strip_stls":
                pending += data
                cut = pending.rfind(b"\n") + 1
                lines, pending = pending[:cut], pending[cut:]
                kept = b"".join(
                    line for line in lines.splitlines(keepends=True) if line.strip() != b"STLS"
                )
                if kept != lines:
                    self._fire(session)
                data = kept
                if not data:
                    continue
            if fault is not None and session.armed_at is not None and not session.fired:
                if fault.kind == "stall":
                    self._fire(session)
                    await asyncio.sleep(fault.seconds)
                elif fault.kind == "cut":
                    left = fault.after_bytes - (session.relayed - session.armed_at)
                    if len(data) >= left:
                        c_writer.write(data[: max(left, 0)])
                        await c_writer.drain()
                        self._fire(session)
                        transport = c_writer.transport
                        with contextlib.suppress(Exception):
                            transport.abort()
                        return
            session.relayed += len(data)
            c_writer.write(data)
            await c_writer.drain()

    def _fire(self, session: _Session) -> None:
        session.fired = True
        assert session.fault is not None
        self.applied[session.fault.label] += 1
        log.debug("relay fault fired: %s", session.fault.label)

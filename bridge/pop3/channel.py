"""`Channel`: one POP3 connection's commands and replies over asyncio, below `POP3Client`.

`POP3Client` is what the poller, the proxy and the probe call (connect, TLS, login, the verbs);
this is what every verb goes through: send a command through the core's `ClientConnection`,
read its reply — as events, or for a batch's plain +OK as one span of the framer's buffer with
the body un-stuffed in bulk (`_reply`), every such reply already buffered at once (`_replies`)
— turn an -ERR into the typed error that says what to do (`_error`), and run batches through
the pipelining window (`_batch`, `bridge.pop3.pipeline`). Framing and session state stay in the
core; nothing here looks at a byte of a reply.

Size rule: no multi-line answer is held past `max_body` octets (LIST sizes come from the server,
so a hostile one could otherwise stream a "message" until memory runs out); over it the
connection is dropped, so nothing is committed and no late reply is misread.
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bridge.pop3.commands import LOGIN_VERBS
from bridge.pop3.connection import EXCLUSIVE_VERBS, ClientConnection
from bridge.pop3.errors import (
    AuthenticationFailed,
    ConnectionLost,
    LocalProtocolError,
    PermanentFailure,
    RemoteProtocolError,
    ResponseError,
    TemporaryFailure,
)
from bridge.pop3.events import (
    Command,
    ConnectionClosed,
    DataChunk,
    EndOfMultiline,
    Event,
    NeedData,
    StatusResponse,
)
from bridge.pop3.pipeline import pipelined
from bridge.pop3.responses import parse_capa
from bridge.pop3.stream import StreamProtocol
from bridge.pop3.wire import LineEnding

__all__ = ["CAPA_MEMO_AGE", "SPAN_LIMIT", "CapaMemo", "Channel"]

log = logging.getLogger("bridge.pop3.client")

# Octets a batch reply may take in the buffer before its end while read whole (span mode);
# longer bodies are streamed chunk by chunk, so a 50 MB RETR is not held twice.
SPAN_LIMIT = 1 << 20


# A CAPA list before login is taken from a `CapaMemo` for at most this many seconds after the
# server last gave it; then it is asked again.
CAPA_MEMO_AGE = 3600.0


@dataclass(slots=True)
class CapaMemo:
    """The CAPA list one account's server gave before login, kept for its next connection.

    `POP3Client.connect(capa_memo=...)` uses it instead of asking CAPA before login (one round
    trip fewer per poll) when it was asked on a connection as encrypted as this one, less than
    `CAPA_MEMO_AGE` seconds ago; otherwise it asks, and records the answer here. It decides
    the mechanism `auth: auto` tries and whether later commands are pipelined, never TLS: STLS
    is asked before it is used, every time, and the policy on plaintext mechanisms is applied
    to the connection as it is (`bridge.pop3.mechanisms.check_allowed`). `caps` is set to None
    (asked again next time) when the session shows the list was wrong: a refused login, an
    error of any kind in the session that used it (`bridge.poller.poll`), or PIPELINING
    missing from the list after login. So a server that changed costs at most one failed poll,
    and never mail: nothing is committed by a session that fails.
    """

    caps: dict[str, tuple[str, ...]] | None = None
    encrypted: bool = False
    asked_at: float = 0.0
    # False once a session that sent commands behind its login's last line got no answer to
    # them (`POP3Client.login(ahead=...)`): a server that advertises PIPELINING but loses
    # what follows the login. Kept for the account loop's life, unlike `caps`.
    behind_login: bool = True


class Channel:
    """Commands out, replies in, -ERR as typed errors, for one connection (see the module)."""

    def __init__(
        self,
        host: str,
        io: StreamProtocol,
        *,
        pipelining: bool,
        window: int,
        line_ending: LineEnding,
        max_body: int | None = None,
    ) -> None:
        self.host = host
        self.max_body = max_body
        self._io = io
        self._conn = ClientConnection(line_ending=line_ending)
        self._pipelining = pipelining
        self._window = max(1, window)
        self._caps: dict[str, tuple[str, ...]] = {}
        self._capa_ok = False
        # The CAPA after login is owed: it goes out with the next command (`_send_all`).
        self._capa_due = False
        # Commands already sent behind the login's last line (`POP3Client.login(ahead=...)`),
        # whose replies are still to be read: the caller's next `_send_all` of exactly these
        # writes nothing.
        self._ahead: tuple[Command, ...] = ()
        self._behind_out = False  # this login attempt's last line carried commands behind it
        # `_caps` came from an earlier connection (`POP3Client.connect(capa_memo=...)`), not
        # from this one; `_capa_memo` is forgotten when this session shows it was wrong.
        self._capa_assumed = False
        self._capa_memo: CapaMemo | None = None
        self._encrypted = False
        self._verified = False  # TLS with the certificate and host name checked
        self._closed = False
        self.mechanism: str | None = None
        self._events = 0  # server events read: did a login attempt get any answer?
        self.uidl_fallback = False  # True once uidl() had to derive ids from headers

    @property
    def pipelining(self) -> bool:
        """Whether batches will be pipelined: advertised by the server and not switched off."""
        return self._pipelining and "PIPELINING" in self._caps

    @property
    def login_delay(self) -> float | None:
        params = self._caps.get("LOGIN-DELAY")
        if params and params[0].isdigit():
            return float(params[0])
        return None

    # -- low level -------------------------------------------------------------------------
    async def _next(self) -> Event:
        while True:
            event = self._conn.next_event()
            if not isinstance(event, NeedData):
                self._events += 1
                return event
            self._conn.receive_data(await self._io.read())

    async def _write(self, data: bytes) -> None:
        self._io.write(data)
        await self._io.drain()

    async def _send(self, command: Command) -> None:
        await self._send_all((command,))

    async def _send_all(self, commands: tuple[Command, ...]) -> None:
        """Write `commands` in one send (more than one only when `pipelining`).

        An owed CAPA (`lazy_capa`, see `POP3Client.login`) goes first in the same write when the
        server pipelines and the command may follow it (not an exclusive one: USER, AUTH,
        QUIT, ...), and its reply is read here, before the caller reads its own; otherwise it
        gets its own exchange first. Either way the caller sees CAPA's outcome in `_caps`.
        """
        if self._closed:
            raise LocalProtocolError(f"cannot send {commands[0].verb}: the session is closed")
        if self._ahead:
            sent = len(commands)
            if self._ahead[:sent] != commands:
                raise LocalProtocolError(
                    f"{commands[0].verb} asked for, but {self._ahead[0].verb} went out behind "
                    "the login and its reply comes first"
                )
            self._ahead = self._ahead[sent:]
            return
        conn = self._conn
        owed = self._capa_due
        if owed:
            self._capa_due = False
            if commands[0].verb in EXCLUSIVE_VERBS or not self.pipelining:
                await self._capa()
                owed = False
        parts = [conn.send(Command("CAPA"))] if owed else []
        try:
            for command in commands:
                parts.append(conn.send(command))
        except LocalProtocolError:
            if len(parts) > owed:
                self.abort()  # commands the core now expects replies to were never sent
                raise
            if owed:  # only the CAPA went to the core: send it, so replies stay in step
                await self._write(parts[0])
                await self._capa_reply()
            raise
        await self._write(parts[0] if len(parts) == 1 else b"".join(parts))
        if owed:
            await self._capa_reply()

    async def _capa(self) -> None:
        await self._send(Command("CAPA"))
        await self._capa_reply()

    async def _capa_reply(self) -> None:
        """Read CAPA's reply into `_caps`; -ERR means no known capabilities (RFC 2449 §5)."""
        body = await self._plain()
        if body is None:
            status = await self._status()
            if not status.ok:
                self._caps, self._capa_ok = {}, False
                return
            body = await self._body()
        self._caps, self._capa_ok = _capabilities(body), True
        memo = self._capa_memo
        if (
            self._capa_assumed
            and memo is not None
            and memo.caps is not None
            and "PIPELINING" in memo.caps
            and "PIPELINING" not in self._caps
        ):
            # Every capability of AUTHORIZATION is announced in TRANSACTION too (RFC 2449 §5):
            # a server that no longer lists PIPELINING after login stopped offering it, so
            # the next connection asks before it pipelines.
            self.forget_assumed_capa()

    def forget_assumed_capa(self) -> None:
        """This session's CAPA came from a memo that proved wrong (or the session failed):
        the next connection asks CAPA again instead of assuming it."""
        if self._capa_assumed and self._capa_memo is not None:
            self._capa_memo.caps = None

    async def _status(self) -> StatusResponse:
        event = await self._next()
        if isinstance(event, ConnectionClosed):
            raise ConnectionLost("server closed the connection instead of replying")
        if not isinstance(event, StatusResponse):
            raise RemoteProtocolError(f"expected a status line, got {type(event).__name__}")
        return event

    async def _simple(self, command: Command) -> StatusResponse:
        await self._send(command)
        status = await self._status()
        if not status.ok:
            raise self._error(command.verb, status)
        return status

    async def _body(self, limit: int | None = None) -> bytes:
        # A body that arrives in one chunk (most mail) is returned as is. Longer ones go into a
        # BytesIO, not a list joined at the end: getvalue() hands over BytesIO's own buffer
        # without copying, so a 50 MB RETR peaks near 1.1x its size instead of 2x.
        first = b""
        rest: io.BytesIO | None = None
        size = 0
        while True:
            event = await self._next()
            if isinstance(event, DataChunk):
                if rest is not None:
                    rest.write(event.data)
                elif size == 0:
                    first = event.data
                else:
                    rest = io.BytesIO(first)
                    rest.seek(0, io.SEEK_END)
                    rest.write(event.data)
                    first = b""
                size += len(event.data)
                cap = self.max_body if limit is None else limit
                if cap is not None and size > cap:
                    raise self._too_long(cap)
            elif isinstance(event, EndOfMultiline):
                return rest.getvalue() if rest is not None else first
            else:  # pragma: no cover - the framer only yields these inside a body
                raise RemoteProtocolError(f"unexpected {type(event).__name__} inside a body")

    def _too_long(self, cap: int) -> RemoteProtocolError:
        self.abort()  # the rest of the answer must not be read as the next one
        return RemoteProtocolError(
            f"{self.host} sent a multi-line answer of more than {cap} "
            "octets, far more than it announced; the connection was dropped"
        )

    async def _multi(self, command: Command) -> tuple[StatusResponse, bytes]:
        status = await self._simple(command)
        return status, await self._body()

    def _error(self, verb: str, status: StatusResponse) -> ResponseError:
        """Turn an -ERR into the error that says what the caller should do."""
        what = f"{verb} refused by {self.host}: {status.text or '-ERR'}"
        if status.has_code("LOGIN-DELAY"):
            return TemporaryFailure(what, status, retry_after=self.login_delay)
        if status.has_code("IN-USE") or status.has_code("SYS/TEMP"):
            return TemporaryFailure(what, status, retry_after=None)
        if status.has_code("SYS/PERM"):
            return PermanentFailure(what, status)
        if status.has_code("AUTH") or verb in LOGIN_VERBS:
            return AuthenticationFailed(what, status)
        if verb == "greeting":
            return TemporaryFailure(what, status, retry_after=None)
        return ResponseError(what, status)

    async def _batch(
        self, numbers: list[int], commands: list[Command]
    ) -> AsyncIterator[list[tuple[int, bytes]]]:
        """(number, body) for each of `commands` in order, in lists: with pipelining, every
        reply already read in full at once (`_replies`)."""
        if self._ahead:
            raise LocalProtocolError(f"{self._ahead[0].verb} went out behind the login: send it")
        if self._capa_due:  # the window's writer sends commands only, so CAPA goes first
            self._capa_due = False
            await self._capa()
        if not self.pipelining:
            for n, command in zip(numbers, commands, strict=True):
                await self._send(command)
                yield [(n, await self._reply(command))]
            return

        async def replies(first: int) -> list[bytes]:
            return await self._replies(commands, first)

        batches = pipelined(
            commands,
            window=self._window,
            encode=self._encode,
            write=self._write,
            replies=replies,
            abandon=self.abort,
        )
        # Driven to its end by `async for`, so the pipeline sees the batch finish; closing it
        # early (an error here, or our caller stopping) makes it abandon the connection.
        at = 0
        try:
            async for bodies in batches:
                yield list(zip(numbers[at : at + len(bodies)], bodies, strict=True))
                at += len(bodies)
        finally:
            await batches.aclose()

    def _encode(self, command: Command) -> bytes:
        if self._closed:
            raise LocalProtocolError(f"cannot send {command.verb}: the session is closed")
        return self._conn.send(command)

    async def _replies(self, commands: list[Command], first: int) -> list[bytes]:
        """The replies from `commands[first]` on that are whole and plain in the buffer
        (`ClientConnection.next_replies`), or else the next one by `_reply`."""
        bodies = self._conn.next_replies(len(commands) - first)
        if not bodies:
            return [await self._reply(commands[first])]
        cap = self.max_body
        if cap is not None and any(len(body) > cap for body in bodies):
            raise self._too_long(cap)
        self._events += len(bodies)
        return bodies

    async def _plain(self, cap: int | None = None) -> bytes | None:
        """The next reply's body (b"" for a single-line one) when it is a plain +OK, taken
        whole from the framer's span mode and un-stuffed in one piece; None when it must be
        read by events (`_status`, `_body`): not a plain +OK, or a body still unfinished past
        `SPAN_LIMIT` buffered octets (then its status line is read, `in_body` is set, and
        `_body` streams the rest). `cap` (default `max_body`) bounds the body either way."""
        conn = self._conn
        cap = self.max_body if cap is None else cap
        limit = SPAN_LIMIT if cap is None else min(cap, SPAN_LIMIT)
        while True:
            body = conn.next_reply(limit)
            if body is None:
                return None
            if isinstance(body, NeedData):
                conn.receive_data(await self._io.read())
                continue
            self._events += 1
            if cap is not None and len(body) > cap:
                raise self._too_long(cap)
            return body

    async def _reply(self, command: Command) -> bytes:
        """One reply of a batch: its body (b"" for a single-line reply); -ERR raises.

        A plain +OK is read whole (`_plain`); anything else, and a body still unfinished past
        `SPAN_LIMIT` buffered octets, is read by events (`_status`, `_body`), which stream it
        and apply `max_body` as it grows.
        """
        conn = self._conn
        body = await self._plain()
        if body is not None:
            return body
        if not conn.in_body:
            status = await self._status()
            if not status.ok:
                raise self._error(command.verb, status)
            if not conn.in_body:
                return b""
        return await self._body()

    def abort(self) -> None:
        """Drop the connection without QUIT: the server changes nothing. Never raises."""
        self._closed = True
        try:
            if self._io.transport is not None:
                self._io.transport.abort()
        except Exception:  # pragma: no cover - best effort by design
            log.debug("abort failed", exc_info=True)

    @property
    def closed(self) -> bool:
        return self._closed


# CAPA bodies seen -> their parsed form. A server sends the same list to every session (one
# before and one after login), so with many accounts on a few servers each list is parsed
# once, not twice per poll. Bounded: a server that varies its list only churns this.
_CAPA_CACHE: dict[bytes, dict[str, tuple[str, ...]]] = {}
_CAPA_CACHE_SIZE = 64


def _capabilities(body: bytes) -> dict[str, tuple[str, ...]]:
    """`parse_capa(body)`, shared between sessions: callers replace `_caps`, never change it."""
    caps = _CAPA_CACHE.get(body)
    if caps is None:
        if len(_CAPA_CACHE) >= _CAPA_CACHE_SIZE:
            _CAPA_CACHE.clear()
        caps = _CAPA_CACHE[body] = parse_capa(body)
    return caps

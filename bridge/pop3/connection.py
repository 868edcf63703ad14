"""`ClientConnection`: the client side of a POP3 session, sans-I/O.

It joins the pieces: commands are checked against the session state and encoded (`send`), their
expected response kinds are queued in the framer in order, and replies come back as events
(`next_event`) while the state machine follows them. The FIFO of outstanding commands is what
lets a pipelining caller send many commands and match the replies in order (RFC 2449 §6.6).

Some commands are never pipelined: USER, PASS, APOP, AUTH, STLS and QUIT change what the
session is (authenticated, encrypted, ending), so they may only be sent when nothing is
outstanding, and nothing may follow them until their reply is in. That is enforced here, not
left to the I/O layer. One exception, asked for by name (`send_behind_login`): ordinary commands
may follow the *last* line of a login (PASS, APOP, AUTH with its initial response or after its
answer to a challenge) before its reply, checked against the state the login's +OK leads to
(RFC 2449 §6.6's own example batches a login with what follows it). If the login is refused
they are answered in AUTHORIZATION (-ERR, or CAPA's list), framed as usual; if the server sends
a SASL challenge instead, it took them for answers, and that is a protocol error.

Replies to a batch (RETR, TOP, DELE) can be read without events: `next_reply` takes a plain +OK
whole from the framer's span mode and hands back the body un-stuffed in one piece (`next_replies`
takes every such reply already buffered at once); whatever is
not plain (an -ERR, a response code) or grows past the caller's limit before its end is left to
`next_event`, so the rules for reading it are the framer's either way.
"""

from __future__ import annotations

from collections import deque

from bridge.pop3.commands import encode_command, response_kind
from bridge.pop3.errors import ConnectionLost, LocalProtocolError, RemoteProtocolError
from bridge.pop3.events import (
    NEED_DATA,
    Command,
    Continuation,
    EndOfMultiline,
    Event,
    Greeting,
    NeedData,
    StatusResponse,
)
from bridge.pop3.state import SessionState, State
from bridge.pop3.wire import (
    DEFAULT_MAX_STATUS_LINE,
    SPAN_EVENTS,
    SPAN_OK,
    LineEnding,
    ResponseFramer,
)

__all__ = ["EXCLUSIVE_VERBS", "ClientConnection"]

EXCLUSIVE_VERBS = frozenset({"USER", "PASS", "APOP", "AUTH", "STLS", "QUIT", "UTF8"})
# Logins whose +OK ends AUTHORIZATION: `send_behind_login` may follow their last line.
LOGIN_ENDS = frozenset({"PASS", "APOP", "AUTH"})


class ClientConnection:
    def __init__(
        self,
        *,
        line_ending: LineEnding = "auto",
        max_status_line: int = DEFAULT_MAX_STATUS_LINE,
    ) -> None:
        self._framer = ResponseFramer(line_ending=line_ending, max_status_line=max_status_line)
        self._session = SessionState()
        self._pending: deque[Command] = deque()
        self._in_auth = False  # a SASL challenge is waiting for our answer
        # Answers sent in the current AUTH exchange, and whether one of them was a cancel.
        self._auth_answers = 0
        self._auth_cancelled = False
        self._tls_pending = False  # STLS accepted; nothing more until the handshake is done
        self.greeting: Greeting | None = None

    @property
    def state(self) -> State:
        return self._session.state

    @property
    def outstanding(self) -> int:
        """Commands sent whose replies have not fully arrived."""
        return len(self._pending)

    @property
    def current_command(self) -> Command | None:
        """The command whose reply the next events belong to (None before the greeting)."""
        if self.greeting is None:
            return None
        return self._pending[0] if self._pending else None

    @property
    def bare_lf(self) -> bool:
        return self._framer.bare_lf

    @property
    def in_body(self) -> bool:
        """The current reply's status line is read, its body not yet all (`next_event` goes on)."""
        return self._framer.in_body

    # -- sending ---------------------------------------------------------------------------
    def send(self, command: Command) -> bytes:
        """Check and encode `command`; raises `LocalProtocolError` before anything is sent."""
        if self._tls_pending:
            raise LocalProtocolError(f"cannot send {command.verb} before the TLS handshake ends")
        pending = self._pending
        if self._in_auth or (pending and pending[0].verb in EXCLUSIVE_VERBS):
            # An exclusive command is only ever sent alone (below), so it is pending[0]; the
            # commands `send_behind_login` queued after a login do not make room for more.
            raise LocalProtocolError(
                f"cannot send {command.verb} while waiting for the reply to {pending[0].verb}"
            )
        if command.verb in EXCLUSIVE_VERBS and self._pending:
            raise LocalProtocolError(
                f"{command.verb} cannot be pipelined: wait for the {len(self._pending)} "
                "outstanding replies first"
            )
        self._session.check(command.verb)
        kind = response_kind(command)
        if kind is None:
            raise LocalProtocolError(
                f"{command.verb} with {len(command.args)} argument(s): reply framing unknown"
            )
        data = encode_command(command)
        self._framer.expect(kind)
        self._pending.append(command)
        if command.verb == "AUTH":
            self._auth_answers, self._auth_cancelled = 0, False
        return data

    def send_behind_login(self, commands: tuple[Command, ...]) -> bytes:
        """Encode `commands` to go out right behind a login's last line, before its reply.

        Only with that login alone outstanding and its last line already encoded: PASS or
        APOP, or AUTH with its initial response on the line or with an answer sent to a
        challenge (the caller knows the mechanism, and so whether that answer is its last:
        a further challenge is refused by `next_event`). Each command is checked against the
        state the login's +OK leads to and may not be exclusive. Raises `LocalProtocolError`
        before anything is queued.
        """
        pending = self._pending
        login = pending[0] if len(pending) == 1 else None
        if (
            login is None
            or login.verb not in LOGIN_ENDS
            or self._tls_pending
            or self._in_auth
            or (
                login.verb == "AUTH"
                and (self._auth_cancelled or (len(login.args) < 2 and not self._auth_answers))
            )
        ):
            raise LocalProtocolError(
                "commands go behind a login only right after its last line, with nothing "
                "else outstanding"
            )
        after = self._session.after(login.verb)
        encoded = []
        for command in commands:
            kind = response_kind(command)
            if command.verb in EXCLUSIVE_VERBS or kind is None or not after.allowed(command.verb):
                raise LocalProtocolError(f"{command.verb} cannot be sent behind {login.verb}")
            encoded.append((encode_command(command), kind, command))
        for _, kind, command in encoded:
            self._framer.expect(kind)
            pending.append(command)
        return b"".join(data for data, _, _ in encoded)

    def send_auth_response(self, response: str | None) -> bytes:
        """Answer the current SASL challenge: base64 text ("" for empty), or None to cancel."""
        if not self._in_auth:
            raise LocalProtocolError("no SASL challenge is waiting for an answer")
        if response is None:
            line = b"*\r\n"
        else:
            data = response.encode("ascii")
            if any(c in data for c in b"\r\n\x00 "):
                raise LocalProtocolError("a SASL response must be a single base64 token")
            line = data + b"\r\n"
        self._in_auth = False
        self._auth_answers += 1
        self._auth_cancelled = response is None
        return line

    def tls_started(self) -> None:
        """The caller finished the TLS handshake after STLS; commands may flow again."""
        if not self._tls_pending:
            raise LocalProtocolError("tls_started() called without an accepted STLS")
        self._tls_pending = False

    # -- receiving -------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        self._framer.receive_data(data)

    def buffered(self) -> int:
        return self._framer.buffered()

    def _span_ready(self) -> bool:
        """Whether the current reply may be read in the framer's span mode: a plain reply to
        an ordinary command, outside authentication and a TLS handshake's wait."""
        pending = self._pending
        return not (
            self._in_auth
            or self._tls_pending
            or self.greeting is None
            or not pending
            or pending[0].verb in EXCLUSIVE_VERBS
        )

    def next_replies(self, most: int) -> list[bytes]:
        """Up to `most` whole plain +OK replies already buffered, as `next_reply` would give
        them one by one (the framer's `take_bodies`); [] when the current reply is not one of
        those (ask `next_reply`)."""
        pending = self._pending
        if not self._span_ready():
            return []
        # Behind a batch's first command there is never an exclusive one (`send` refuses it).
        bodies = self._framer.take_bodies(min(most, len(pending)))
        on_reply = self._session.on_reply
        for _ in bodies:
            on_reply(pending.popleft().verb, True)
        return bodies

    def next_reply(self, limit: int) -> bytes | NeedData | None:
        """The current reply, if it is a plain +OK, from the framer's span mode: b"" for a
        single-line one, the un-stuffed body of a multi-line one once all of it is buffered.

        `NEED_DATA`: feed more bytes. None: read the reply with `next_event` instead — from its
        status line, or (when `in_body`) from its body, which had passed `limit` buffered octets
        before its end (the caller then streams it, as it would any large body).
        """
        pending = self._pending
        if not self._span_ready():
            return None
        framer = self._framer
        found = framer.next_span(whole=True, ok_only=True)
        if found == SPAN_OK:
            self._session.on_reply(pending.popleft().verb, True)
            return framer.take_body()
        if framer.in_body and (found == SPAN_EVENTS or framer.buffered() > limit):
            # The +OK line is framed: the events read the body from where it starts.
            framer.take_span()
            self._session.on_reply(pending[0].verb, True)
            return None
        return None if found == SPAN_EVENTS else NEED_DATA

    def next_event(self) -> Event | NeedData:
        if self._in_auth or self._tls_pending:
            # The server owes us nothing until we answer; anything it sent is out of turn.
            if self._framer.buffered():
                raise RemoteProtocolError("server sent data out of turn")
            if self._framer.eof:
                raise ConnectionLost("connection closed while the server awaited our answer")
            return NEED_DATA
        event = self._framer.next_event()
        if isinstance(event, Greeting):
            self.greeting = event
            self._session.on_greeting(event.ok)
        elif isinstance(event, StatusResponse):
            command = self._pending[0]
            self._session.on_reply(command.verb, event.ok)
            if not self._framer.in_body:
                self._pending.popleft()
            if command.verb == "STLS" and event.ok:
                if self._framer.buffered():
                    # CVE-2021-22947: bytes sent before the handshake would be read as if
                    # they came over TLS.
                    raise RemoteProtocolError(
                        "server sent data after its STLS reply, before the TLS handshake"
                    )
                self._tls_pending = True
        elif isinstance(event, EndOfMultiline):
            self._pending.popleft()
        elif isinstance(event, Continuation):
            if self._pending[0].verb != "AUTH":
                raise RemoteProtocolError("server sent a SASL challenge outside AUTH")
            if len(self._pending) > 1:
                # Commands went behind what was to be the last answer: the server reads them
                # as answers to this challenge, so nothing after it can be matched up.
                raise RemoteProtocolError(
                    "server sent a SASL challenge after the last answer, with commands behind it"
                )
            self._in_auth = True
        return event

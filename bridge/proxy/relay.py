"""The per-session relay, sans-I/O: client bytes and upstream bytes in, what to send out.

Theory of operation
-------------------
Client bytes go through the core's `CommandReader` (lines bounded to 255 octets; NUL, bare CR
and over-long lines raise `BadCommandLine` with the reader already back in sync). Each command
becomes an entry in one FIFO, `_pending`, in the order the client sent it:

* forwarded: its raw line goes upstream unchanged and the upstream `ResponseFramer` is told
  which kind of response to expect (`response_kind`); the response's raw bytes go to the client
  as they are framed (a multi-line body streams out chunk by chunk, never buffered whole);
* local: the proxy answers (policy refusal, bad line, unknown verb, STLS, the routing login);
  the answer waits in the FIFO until every earlier entry is answered, so a refused command in a
  pipeline is answered in its place.

Commands whose reply changes the session state (USER, PASS, APOP, AUTH, QUIT, STLS) are
barriers: the relay reads past earlier commands freely, but takes a barrier only when the FIFO
is empty and reads nothing after it until it is answered. State-dependent decisions (require
TLS, read-only QUIT, STLS) thus always see the real state, and bytes a client pipelines after
STLS are caught before TLS starts. At most `MAX_PIPELINE` entries are outstanding; the session
stops reading the client while `client_backlog()` is large, so a flooding client is slowed, not
buffered.

Only CAPA responses are held back, and only their small body: they are rewritten to what both
the upstream and the proxy support, minus what policy hides.

Pass-through in TRANSACTION
---------------------------
Most of a mailbox session is RETR, TOP, LIST, UIDL, STAT, NOOP, DELE: verbs that change no
state, in TRANSACTION, whose responses nobody reads but the client. For those (when no tap can
capture and the upstream uses CRLF) the relay asks the core's `ResponseFramer` for its span
mode: the framer frames each plain response in place (its line rules, its body end) and a run
of them goes to the client as one slice of the framer's buffer, with no event objects and no
copy per piece. The relay holds no framing rule of its own: it only chooses, per response,
which of the framer's two modes to ask. Whatever span mode does not take — another verb,
another state, a tapped RETR, a status line that is not plain, the connection ending
mid-response — the framer's events frame, to the end of that response (`Pending.expected`).
The framer is told each forwarded command's response kind when the command goes upstream
(`_forward`), so both modes read one queue and one buffer. Where each response ends, what the
client gets, the FIFO, the log records and the policy are the same either way; a hypothesis
property (tests/proxy/test_relay_fast_path.py) feeds arbitrary pipelines, replies and
chunkings to a relay with and without the pass-through path and compares every step, and
tests/pop3/test_span_mode.py compares the framer's two modes. The relay expects a framer whose
line ending is decided (`line_ending="crlf"` or ``"lf"``; the session passes one).

Client lines get the same treatment: in TRANSACTION, with no SASL answer due, the relay asks
the core's `CommandReader` for a plain line first (`next_plain`: one of those verbs, up to two
short printable arguments, CRLF, read without an event object) and takes any other line as an
event. Both are the reader's rules over the reader's one buffer; a second property compares
both ways over arbitrary client bytes and chunkings.

Decisions that are not the protocol's go through one seam (`bridge.proxy.handler`): the
session object carries the policy (plain data) and the user; the handler is asked
`handle_LOGIN` (the per-user limit) and, only in a tapped session, `handle_RETR` (the tap).

Why this module stays one piece (about 750 lines): it is one state machine over one FIFO.
Every branch — a command forwarded, refused or held behind a barrier; a response framed by
span mode or by events, the CAPA rewrite, the tap, local answers in their place — reads and
writes the same `Pending` entries, session state and closing rules. Split into modules, that
shared state would be read and written across module boundaries, the rule-in-two-places this
house avoids. What is not the state machine lives elsewhere: the records it emits
(`records.py`), policy (`policy.py`), the routing login (`auth.py`), the decisions
(`handler.py`), all framing, both legs (`bridge.pop3.wire`), and all I/O (`session.py`).

The relay never writes a byte that did not come from the upstream framer or from a complete
local answer: on upstream failure in the middle of a body the client connection is just
closed (a truncated response, never a fake end), and an upstream that fails before a status
line is answered ``-ERR [SYS/TEMP]``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from bridge.pop3.commands import RESPONSE_KINDS, ResponseKind, response_kind
from bridge.pop3.errors import BadCommandLine, ConnectionLost, RemoteProtocolError
from bridge.pop3.events import (
    NEED_DATA,
    AuthResponseLine,
    Command,
    ConnectionClosed,
    Continuation,
    DataChunk,
    EndOfMultiline,
    Greeting,
    StatusResponse,
)
from bridge.pop3.sasl import decode_challenge
from bridge.pop3.state import STATE_CHANGING, SessionState, State
from bridge.pop3.wire import (
    SPAN_ERR,
    SPAN_EVENTS,
    SPAN_NEED,
    SPAN_PART,
    CommandReader,
    ResponseFramer,
)
from bridge.proxy.auth import ROUTABLE_MECHANISMS, Challenge, Credentials, LocalLogin, Refusal
from bridge.proxy.handler import ProxyHandler, ProxySession
from bridge.proxy.policy import Decision, Policy, rewrite_capa
from bridge.proxy.records import Actions, CaptureSink, Exchange, Pending, loggable_args

__all__ = ["MAX_PIPELINE", "Actions", "CaptureSink", "Exchange", "Relay", "loggable_args"]

MAX_PIPELINE = 64
MAX_CAPA_BODY = 64 * 1024
# Must exceed the longest line the reader accepts (a SASL response, 64 KiB): with the two
# equal, a client that sent a 64 KiB response and nothing more was neither read further nor
# refused, and the session hung (issue 19).
CLIENT_BACKLOG_LIMIT = 2 * 64 * 1024
_BARRIERS = STATE_CHANGING | {"STLS"}
_AUTH_STATES = (State.AUTHORIZATION, State.AUTHORIZATION_USER)
_LOGIN_VERBS = frozenset({"PASS", "APOP", "AUTH"})
_USER_VERBS = frozenset({"USER", "APOP", "AUTH"})
# Verbs whose responses may take the pass-through path (in TRANSACTION only): they change no
# state and nothing but the client reads their response (RETR only when no tap is configured).
_FAST_VERBS = frozenset({"RETR", "TOP", "LIST", "UIDL", "STAT", "NOOP", "DELE", "RSET", "LAST"})

UPSTREAM_LOST = b"-ERR [SYS/TEMP] upstream server connection lost\r\n"
_ROUTING_CAPA = b"USER\r\nSASL " + " ".join(ROUTABLE_MECHANISMS).encode() + b"\r\nRESP-CODES\r\n"
_ROUTING_CAPA += b"AUTH-RESP-CODE\r\n"


def _plain_user(initial: str) -> str | None:
    try:
        parts = decode_challenge(initial).split(b"\x00")
    except RemoteProtocolError:
        return None
    return parts[1].decode("utf-8", "replace") if len(parts) == 3 else None


class Relay:
    """One client session. Feed `client_data` / `upstream_data`, then apply `take()`."""

    def __init__(
        self,
        *,
        session: ProxySession,
        upstream: ResponseFramer | None,
        handler: ProxyHandler | None = None,
        offer_stls: bool = False,
        encrypted: bool = False,
        clock: Callable[[], float] = time.monotonic,
        fast_path: bool = True,
    ) -> None:
        self.session = session
        self._handler = handler
        self._framer = upstream
        self._fast_path = fast_path
        self._client_eof = False
        self._auth_line_expected = False  # the reader takes the next line as a SASL answer
        self._login = LocalLogin() if upstream is None else None  # routing mode until login
        self._reader = CommandReader()
        self._state = SessionState(State.AUTHORIZATION)
        self._pending: deque[Pending] = deque()
        self._held: Command | None = None
        self._sasl_answer = False  # the client's next line answers a SASL challenge
        self._offer_stls = offer_stls
        self.encrypted = encrypted
        self._clock = clock
        self._out = Actions()
        self.closing: str | None = None
        self._user_candidate: str | None = None
        self.errors = 0
        self.auth_failures = 0
        self.commands = 0

    # -- public ------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self._state.state

    @property
    def routing(self) -> bool:
        return self._framer is None

    @property
    def policy(self) -> Policy:
        return self.session.policy

    @property
    def user(self) -> str | None:
        return self.session.user

    def _claim(self, user: str) -> bool:
        """The handler's word on logging `user` in (the per-user limit); yes without one."""
        handler = self._handler
        return handler is None or handler.handle_LOGIN(self.session, user)

    def take(self) -> Actions:
        out, self._out = self._out, Actions()
        return out

    def client_backlog(self) -> int:
        """Bytes the client sent that the relay has not read yet (to pause reading the client)."""
        return self._reader.buffered()

    def wants_client_data(self) -> bool:
        return self.closing is None and self.client_backlog() < CLIENT_BACKLOG_LIMIT

    def client_data(self, data: bytes) -> None:
        if not data:
            self._client_eof = True
        self._reader.receive_data(data)
        self._read_client()

    def upstream_data(self, data: bytes) -> None:
        assert self._framer is not None
        self._framer.receive_data(data)
        self._read_upstream()

    def tls_started(self) -> None:
        """The client leg is now TLS: forget what came before (RFC 2595 §4)."""
        self.encrypted = True
        self._reader = CommandReader()
        self._auth_line_expected = False
        if self._login is not None:
            self._login = LocalLogin()
        self._read_client()

    def login_finished(self, *, reply: bytes, upstream: ResponseFramer | None) -> None:
        """The session's upstream login (routing mode) is done; `upstream` is None on failure.

        On success the caller has set the session's route, policy and tapping first."""
        head = self._pending[0]
        assert head.login
        ok = upstream is not None
        if ok:
            self._framer = upstream
            self._login = None
            self._state.state = State.TRANSACTION
            self.session.user = self._user_candidate
        else:
            self.auth_failures += 1
            self._count_error()
            if self.auth_failures >= self.policy.rules.max_auth_attempts:
                head.close = "too many failed logins"
        head.kind = None
        head.login = False
        head.reply = reply
        head.outcome = "ok" if ok else "err"
        self._flush_local()
        self._read_client()

    # -- client side -------------------------------------------------------------------------
    def _blocked(self) -> bool:
        if self.closing is not None:
            return True
        if self._sasl_answer:
            return False
        if self._pending and self._pending[-1].verb in _BARRIERS:
            return True
        return len(self._pending) >= MAX_PIPELINE

    def _read_client(self) -> None:
        while not self._blocked():
            if self._held is not None:
                if self._pending:
                    return
                command, self._held = self._held, None
                self._command(command)
                continue
            if self._fast_client_ok():
                plain = self._reader.next_plain(_FAST_VERBS)
                if isinstance(plain, tuple):
                    self._plain_command(*plain)
                    continue
                if plain is not None:
                    return  # NEED_DATA: a plain line may be arriving
            try:
                event = self._reader.next_event()
            except BadCommandLine as exc:
                self.errors += 1
                if self._auth_line_expected:
                    # A SASL exchange cannot skip a response: the upstream (or the routing
                    # login) waits for it. Answer at once, past the waiting AUTH, and close.
                    self._out.to_client.append(_err(f"SASL response refused: {exc}"))
                    self._close("SASL response over the line limit")
                    return
                self._local("-", (), _err(f"bad command line: {exc}"), "bad", note=exc.reason)
                continue
            if event is NEED_DATA:
                return
            if isinstance(event, ConnectionClosed):
                # A client may half-close after its last command: its replies still go out.
                if not self._pending:
                    self._close("client closed the connection")
                return
            if isinstance(event, AuthResponseLine):
                self._auth_line_expected = False
                self._auth_line(event)
                continue
            assert isinstance(event, Command)
            self.commands += 1
            if event.verb in _BARRIERS and self._pending:
                self._held = event
                return
            self._command(event)

    # -- client side: the pass-through path ------------------------------------------------------
    def _fast_client_ok(self) -> bool:
        """Whether plain command lines may be read without events (TRANSACTION, no SASL answer
        due; the reader itself declines while it skips a long line)."""
        return (
            self._fast_path
            and self._state.state is State.TRANSACTION
            and self._login is None
            and not self._sasl_answer
            and not self._client_eof
        )

    def _plain_command(self, verb: str, args: tuple[str, ...], raw: bytes) -> None:
        """`_command` for a plain line of a pass-through verb (`CommandReader.next_plain`)."""
        self.commands += 1
        kind = RESPONSE_KINDS.get((verb, bool(args)))
        if kind is None:
            self._count_error()
            self._local(verb, args, b"-ERR unknown command\r\n", "unknown")
            return
        verdict = self.policy.decide_verb(verb, State.TRANSACTION, encrypted=self.encrypted)
        if verdict.decision is not Decision.FORWARD:
            self._local(verb, args, verdict.reply, "denied")
            return
        self._forward(raw, Pending(verb, args, self._clock(), kind))

    def _command(self, command: Command) -> None:
        verb, args = command.verb, loggable_args(command)
        if verb == "STLS":
            self._stls(command)
            return
        kind = response_kind(command)
        if kind is None:
            self._count_error()
            self._local(verb, args, b"-ERR unknown command\r\n", "unknown")
            return
        verdict = self.policy.decide(command, self.state, encrypted=self.encrypted)
        if verdict.decision is Decision.DENY:
            if self.state is not State.TRANSACTION:
                self._count_error()
            self._local(verb, args, verdict.reply, "denied")
            return
        if verdict.decision is Decision.LOCAL_QUIT:
            self._local(verb, args, verdict.reply, "ok", close="quit")
            return
        if self._login is not None:
            self._routing_command(command, args)
            return
        if verb in _USER_VERBS:
            self._note_user(command)
        self._forward(command.raw, Pending(verb, args, self._clock(), kind))

    def _forward(self, raw: bytes, item: Pending) -> None:
        """Send a command upstream; the framer expects its response from now on."""
        framer = self._framer
        assert framer is not None and item.kind is not None
        framer.expect(item.kind)
        self._out.to_upstream.append(raw)
        self._pending.append(item)

    def _note_user(self, command: Command) -> None:
        """Remember who a USER/APOP/AUTH command logs in as (for the per-user limit)."""
        verb, args = command.verb, command.args
        if verb in ("USER", "APOP") and args:
            self._user_candidate = args[0]
        elif verb == "AUTH" and len(args) == 2 and args[0].upper() == "PLAIN":
            self._user_candidate = _plain_user(args[1])
        elif verb == "AUTH":
            self._user_candidate = None

    def _can_stls(self) -> bool:
        return (
            self._offer_stls
            and not self.encrypted
            and self.state in _AUTH_STATES
            and not self.policy.refused("STLS")
        )

    def _stls(self, command: Command) -> None:
        if not self._can_stls():
            self._count_error()
            self._local("STLS", (), b"-ERR STLS not available\r\n", "err")
            return
        if self._reader.buffered():
            # Bytes pipelined after STLS would be taken as sent under TLS (CVE-2011-0411 class).
            self._local("STLS", (), b"-ERR data after STLS\r\n", "bad", close="data after STLS")
            return
        self._local("STLS", (), b"+OK begin TLS negotiation\r\n", "ok")
        self._out.start_client_tls = True

    def _routing_command(self, command: Command, args: tuple[str, ...]) -> None:
        assert self._login is not None
        verb = command.verb
        if verb == "CAPA":
            body = rewrite_capa(
                _ROUTING_CAPA,
                hidden=self.policy.hidden_capabilities(encrypted=self.encrypted),
                offer_stls=self._can_stls(),
            )
            self._local(verb, args, b"+OK capability list follows\r\n" + body + b".\r\n", "ok")
            return
        if verb == "QUIT":
            self._local(verb, args, b"+OK bye\r\n", "ok", close="quit")
            return
        if verb == "NOOP":
            self._local(verb, args, b"+OK\r\n", "ok")
            return
        if verb == "USER" and command.args:
            self._user_candidate = command.args[0]
        self._login_result(verb, args, self._login.command(command))

    def _login_result(
        self, verb: str, args: tuple[str, ...], result: Credentials | Challenge | Refusal
    ) -> None:
        if isinstance(result, Challenge):
            self._sasl_answer = True
            self._auth_line_expected = True
            self._reader.expect_auth_response()
            self._out.to_client.append(result.line)
            if not self._pending or self._pending[-1].verb != "AUTH":
                self._pending.append(Pending(verb, args, self._clock(), ResponseKind.SASL))
            return
        self._sasl_answer = False
        head = self._pending[-1] if self._pending and self._pending[-1].verb == "AUTH" else None
        if head is None:
            head = Pending(verb, args, self._clock(), None)
            self._pending.append(head)
        head.kind = None
        if isinstance(result, Refusal):
            head.reply = result.line
            head.outcome = "ok" if result.line.startswith(b"+OK") else "err"
            if result.failed_login:
                self.auth_failures += 1
            if head.outcome == "err":
                self._count_error()
            if self.auth_failures >= self.policy.rules.max_auth_attempts:
                head.close = "too many failed logins"
            elif self.errors >= self.policy.rules.max_errors:
                head.close = "too many errors"
            self._flush_local()
            return
        self._user_candidate = result.user
        if not self._claim(result.user):
            head.reply = b"-ERR [IN-USE] too many sessions for this user\r\n"
            head.outcome = "denied"
            self._flush_local()
            return
        head.login = True
        self._out.login = result

    def _auth_line(self, event: AuthResponseLine) -> None:
        if not self._sasl_answer:  # pragma: no cover - the reader only returns these when asked
            return
        if self._login is not None:
            self._login_result("AUTH", (), self._login.answer(event.data))
            return
        self._sasl_answer = False
        self._out.to_upstream.append(event.raw)

    # -- upstream side -----------------------------------------------------------------------
    def _read_upstream(self) -> None:
        framer = self._framer
        assert framer is not None
        pending = self._pending
        now = 0.0
        while self.closing is None:
            head = pending[0] if pending else None
            if head is None or self._fast_ok(head):
                # The pass-through path: the framer's span mode, no events (module docstring).
                # With nothing pending it says whether the events have something to say.
                before = framer.span_end
                found = framer.next_span()
                if found == SPAN_NEED:
                    break
                if found != SPAN_EVENTS:
                    assert head is not None  # a framed response answers a pending command
                    head.response_bytes += framer.span_end - before
                    if head.status is None:
                        head.status = _PLAIN_ERR if found == SPAN_ERR else _PLAIN_OK
                        self._sasl_answer = False
                    if found != SPAN_PART:
                        now = now or self._clock()
                        self._fast_complete(head, now)
                    continue
            if framer.span_end:
                self._out.to_client.append(framer.take_span())
            if head is not None:
                head.expected = True  # the events frame the rest of this response
            try:
                event = framer.next_event()
            except (RemoteProtocolError, ConnectionLost) as exc:
                self._upstream_failed(str(exc))
                return
            if event is NEED_DATA:
                break
            if isinstance(event, ConnectionClosed):
                self._close("upstream closed the connection")
                return
            assert head is not None
            if isinstance(event, StatusResponse):
                self._status(head, event)
            elif isinstance(event, DataChunk):
                if head.capa is not None:
                    head.capa += event.data
                    if len(head.capa) > MAX_CAPA_BODY:
                        self._upstream_failed("CAPA response too long")
                        return
                else:
                    self._emit(head, event.raw)
                    if head.capture is not None:
                        head.capture.feed(event.data)
            elif isinstance(event, EndOfMultiline):
                if head.capa is not None:
                    assert head.status is not None
                    self._emit(head, head.status.raw + self._client_capa(head.capa) + event.raw)
                else:
                    self._emit(head, event.raw)
                if head.capture is not None:
                    head.capture.finish()
                    head.capture = None
                self._complete(head)
            elif isinstance(event, Continuation):
                self._emit(head, event.raw)
                self._sasl_answer = True
                self._auth_line_expected = True
                self._reader.expect_auth_response()
            elif isinstance(event, Greeting):  # pragma: no cover - the session reads it
                self._upstream_failed("unexpected greeting")
                return
        if framer.span_end:
            self._out.to_client.append(framer.take_span())
        self._read_client()

    # -- upstream: the pass-through path ---------------------------------------------------------
    def _fast_ok(self, head: Pending) -> bool:
        """Whether `head`'s response may be framed in span mode (see the module docstring)."""
        framer = self._framer
        return (
            self._fast_path
            and not head.expected
            and head.kind is not None
            and head.verb in _FAST_VERBS
            and self._state.state is State.TRANSACTION
            and (not self.session.tapping or head.verb != "RETR")
            and framer is not None
            and not framer.bare_lf
        )

    def _fast_complete(self, head: Pending, now: float) -> None:
        """`_complete` for a pass-through response (its bytes stay in the framer's span)."""
        pending = self._pending
        pending.popleft()
        status = head.status
        assert status is not None
        head.outcome = "ok" if status.ok else "err"
        self._out.exchanges.append(
            Exchange(
                head.verb,
                head.args,
                head.outcome,
                None,
                head.response_bytes,
                now - head.started,
                False,
                None,
            )
        )
        if pending and pending[0].kind is None:
            # A local answer is next in line: what came before it goes out first.
            framer = self._framer
            assert framer is not None
            if framer.span_end:
                self._out.to_client.append(framer.take_span())
            self._flush_local()

    def _status(self, head: Pending, status: StatusResponse) -> None:
        head.status = status
        self._sasl_answer = False
        if status.ok and head.verb in _LOGIN_VERBS and self.state in _AUTH_STATES:
            user = self._user_candidate
            if user is not None and not self._claim(user):
                # Upstream said yes but the user is over the limit: drop upstream without QUIT.
                self._emit(head, b"-ERR [IN-USE] too many sessions for this user\r\n")
                head.outcome = "denied"
                self._record(head)
                self._pending.popleft()
                self._close("per-user connection limit")
                return
        if status.ok and head.kind is ResponseKind.MULTI:
            framer = self._framer
            assert framer is not None
            if head.verb == "CAPA":
                head.capa = bytearray()
                framer.unstuff = True
                return
            self._emit(head, status.raw)
            if head.verb == "RETR" and self.session.tapping and head.args:
                number = head.args[0]
                if number.isdigit() and self._handler is not None:
                    head.capture = self._handler.handle_RETR(self.session, int(number))
            # Bodies nobody reads are relayed as they are: only their end is looked for.
            framer.unstuff = head.capture is not None
            return
        self._emit(head, status.raw)
        self._complete(head)

    def _client_capa(self, body: bytearray) -> bytes:
        framer = self._framer
        sep = b"\n" if framer is not None and framer.bare_lf else b"\r\n"
        hidden = self.policy.hidden_capabilities(encrypted=self.encrypted)
        stls = self._can_stls()
        text = rewrite_capa(bytes(body), hidden=hidden, offer_stls=stls)
        if sep == b"\n":
            text = text.replace(b"\r\n", b"\n")
        # Re-stuff: a capability line cannot start with "." in practice, but stay exact.
        lines = [b"." + line if line.startswith(b".") else line for line in text.splitlines(True)]
        return b"".join(lines)

    def _complete(self, head: Pending) -> None:
        self._pending.popleft()
        status = head.status
        assert status is not None
        before = self.state
        verb = head.verb
        self._state.on_reply(verb, status.ok)
        if verb in _LOGIN_VERBS and before in _AUTH_STATES:
            if status.ok and self.state is State.TRANSACTION:
                self.session.user = self._user_candidate
            elif not status.ok:
                self.auth_failures += 1
        head.outcome = "ok" if status.ok else "err"
        self._record(head)
        if not status.ok and before is not State.TRANSACTION:
            self._count_error()
        if verb == "QUIT":
            self._close("quit")
        elif (
            self.auth_failures >= self.policy.rules.max_auth_attempts and self.state in _AUTH_STATES
        ):
            self._close("too many failed logins")
        elif self.errors >= self.policy.rules.max_errors and self.state is not State.TRANSACTION:
            self._close("too many errors")
        self._flush_local()

    def _upstream_failed(self, why: str) -> None:
        if self._pending and not self._pending[0].login:
            head = self._pending[0]
            if head.capture is not None:
                head.capture.abort()
                head.capture = None
            head.outcome = "lost"
            head.note = why
            if head.status is None or head.capa is not None:
                # Nothing of this response reached the client yet: a clean answer is possible.
                self._emit(head, UPSTREAM_LOST)
            self._record(head)
            self._pending.popleft()
        self._close(f"upstream failed: {why}")

    # -- local answers and bookkeeping ---------------------------------------------------------
    def _local(
        self,
        verb: str,
        args: tuple[str, ...],
        reply: bytes,
        outcome: str,
        *,
        note: str | None = None,
        close: str | None = None,
    ) -> None:
        item = Pending(verb, args, self._clock(), None, reply, outcome, note, close)
        if self.errors >= self.policy.rules.max_errors and outcome != "ok" and close is None:
            item.close = "too many errors"
        self._pending.append(item)
        self._flush_local()

    def _flush_local(self) -> None:
        while self._pending and self.closing is None:
            head = self._pending[0]
            if head.kind is not None or head.login:
                return
            self._pending.popleft()
            self._emit(head, head.reply)
            self._record(head)
            if head.close is not None:
                self._close(head.close)

    def _emit(self, head: Pending, data: bytes) -> None:
        self._out.to_client.append(data)
        head.response_bytes += len(data)

    def _record(self, head: Pending) -> None:
        status = head.status
        self._out.exchanges.append(
            Exchange(
                head.verb,
                head.args,
                head.outcome,
                status.code if status is not None else None,
                head.response_bytes,
                self._clock() - head.started,
                head.status is None,
                head.note,
            )
        )

    def _count_error(self) -> None:
        self.errors += 1

    def _close(self, reason: str) -> None:
        if self.closing is None:
            self.closing = reason
            self._out.close = reason
            for item in self._pending:
                if item.capture is not None:
                    item.capture.abort()
                    item.capture = None


# What a pass-through response's status line said, for the FIFO entry (no code, by construction).
_PLAIN_OK = StatusResponse(True, None, "", b"")
_PLAIN_ERR = StatusResponse(False, None, "", b"")


def _err(text: str) -> bytes:
    return b"-ERR " + text.encode("ascii", "replace") + b"\r\n"

"""`POP3Client`: asyncio I/O around the sans-I/O `ClientConnection`. It only moves bytes, picks
mechanisms and turns -ERR replies into typed errors; framing and state live in the core.

Data safety: QUIT is what commits. `quit()` / `close(commit=True)` ends the session in UPDATE
(the server removes DELE'd messages, and on some servers, such as Gmail or an `EXPIRE 0` server,
also the messages RETR'd in this session). `abort()` / `close(commit=False)` drops the TCP
connection instead, and RFC 1939 §6 guarantees nothing changes. Leaving the `async with` block
without calling `quit()` aborts, so forgetting to commit never deletes anything.

Pipelining (RFC 2449 §6.6) is used for `retrieve_many` (and `retrieve_batches`, the same in
lists), `top_many` and `delete_many` when the server advertises PIPELINING and it was not
switched off (`bridge.pop3.pipeline`: a window of credit). Logins, STLS and QUIT are never
pipelined (the core refuses), except that `login(ahead=...)` may send the session's first
commands behind the login's last line (`ClientConnection.send_behind_login`). If a pipelined
batch fails or the caller stops iterating early, the connection is aborted (nothing
committed): replies still in flight would otherwise be read as answers to later commands.

Reading replies, batches and the typed errors live in `bridge.pop3.channel` (the base class),
the TLS context in `bridge.pop3.tls`; this module holds what a session does: connect, STLS,
login, the verbs, QUIT. It stays one module (about 670 lines) because those steps read and
change the same per-connection facts (capabilities re-read after STLS and after login, the
encryption that decides which mechanisms may run, the greeting's APOP stamp) in an order the
RFCs fix; split, each piece would reach into the others' state.

Which mechanism `login` uses, and which it tries when one is refused, is decided in
`bridge.pop3.mechanisms` (pure); this module only runs the chosen exchange.

Servers without UIDL: `uidl(header_id=...)` falls back to ids derived from each message's
headers (`TOP n 0`) by the function it is given (the poller passes `bridge.mail.header_uid`:
`pop3` does not import `mail`, and there is one header hash, there).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import inspect
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from types import TracebackType
from typing import Literal, Self

from bridge.pop3.channel import CAPA_MEMO_AGE, CapaMemo, Channel
from bridge.pop3.errors import (
    AuthenticationFailed,
    ConnectionLost,
    LocalProtocolError,
    RemoteProtocolError,
    ResponseError,
    TLSFailure,
)
from bridge.pop3.events import (
    Command,
    ConnectionClosed,
    Continuation,
    Greeting,
    StatusResponse,
)
from bridge.pop3.mechanisms import (
    MECHANISMS,
    Offer,
    after_refusal,
    auto_order,
    check_allowed,
    check_offered,
    falls_back,
)
from bridge.pop3.mechanisms import normalise as normalise_mechanism
from bridge.pop3.responses import parse_list, parse_list_line, parse_stat, parse_uidl
from bridge.pop3.resumption import Resumption
from bridge.pop3.sasl import (
    CramMD5,
    Login,
    Mechanism,
    OAuthBearer,
    Plain,
    XOAuth2,
    apop_digest,
    auth_command,
    decode_challenge,
    encode_response,
)
from bridge.pop3.state import State
from bridge.pop3.stream import StreamProtocol
from bridge.pop3.tls import client_context, ssl_reason
from bridge.pop3.wire import LineEnding

__all__ = [
    "MECHANISMS",
    "STAT_UIDL",
    "CapaMemo",
    "POP3Client",
    "TLSMode",
    "TokenSource",
    "login_with_fallback",
]

log = logging.getLogger(__name__)

TLSMode = Literal["implicit", "starttls", "none"]
TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]


# A poll's first commands once logged in (`stat_uidl`), which `login(ahead=STAT_UIDL)` may send
# behind the login's last line.
STAT_UIDL = (Command("STAT"), Command("UIDL"))

# Octets one UIDL line may take when the answer is bounded by STAT's count: RFC 1939 ids are
# at most 70 characters; servers that send longer ones stay far below this.
UIDL_LINE_MAX = 512


class POP3Client(Channel):
    """An authenticated-or-not POP3 session over asyncio. Create it with `connect`."""

    # This connection's part in its TLS context's session cache, until it ends.
    _resumption: Resumption | None = None

    # -- connecting ------------------------------------------------------------------------
    @classmethod
    async def connect(
        cls,
        host: str,
        port: int | None = None,
        *,
        tls: TLSMode = "implicit",
        ssl_context: ssl.SSLContext | None = None,
        ca_file: str | None = None,
        insecure: bool = False,
        connect_timeout: float = 30.0,
        read_timeout: float = 120.0,
        pipelining: bool = True,
        window: int = 50,
        line_ending: LineEnding = "auto",
        max_body: int | None = None,
        capa_memo: CapaMemo | None = None,
        tls_resume: bool = True,
    ) -> POP3Client:
        """Connect, read the greeting, set up TLS as asked and fetch CAPA.

        With `capa_memo` the CAPA before login may come from the account's previous connection
        instead (`CapaMemo`: when, and why it never weakens TLS); the CAPA before STLS is
        always asked.

        Certificates are verified against the system store (or `ca_file`) with the host name
        checked, unless `insecure=True`. With `tls="starttls"` a server that does not offer STLS,
        or refuses it, is an error: there is no fall-back to plaintext.

        `max_body` caps every multi-line answer (RETR, TOP, UIDL, ...) in octets: LIST sizes
        come from the server, so without a cap a hostile server could stream one "message"
        until memory runs out. Over the cap the connection is dropped (nothing is committed).

        With a context that keeps sessions (the ones `bridge.pop3.tls` builds) the handshake
        offers the session it keeps for this host, port and name, and the context learns how
        the handshake went when the connection ends (`bridge.pop3.resumption`: what is kept,
        for how long, when offers stop, and why a resumed connection is as verified as a full
        one); `tls_resume=False` does a full handshake and leaves the context as it is.
        """
        if tls not in ("implicit", "starttls", "none"):
            raise LocalProtocolError(f"tls must be 'implicit', 'starttls' or 'none', not {tls!r}")
        if port is None:
            port = 995 if tls == "implicit" else 110
        ctx = client_context(ssl_context, ca_file, insecure) if tls != "none" else None
        resumption = Resumption.for_context(ctx, host, port, tls_resume)
        loop = asyncio.get_running_loop()
        try:
            # Set for STLS too: uvloop's start_tls runs in a copy of this call's context.
            with _offering(resumption):
                async with asyncio.timeout(connect_timeout):
                    _, proto = await loop.create_connection(
                        lambda: StreamProtocol(read_timeout, loop=loop),
                        host,
                        port,
                        ssl=ctx if tls == "implicit" else None,
                        server_hostname=host if tls == "implicit" else None,
                        ssl_handshake_timeout=connect_timeout if tls == "implicit" else None,
                    )
        except TimeoutError:
            _handshake_failed(resumption, tls == "implicit")
            raise ConnectionLost(f"timed out connecting to {host}:{port}") from None
        except ssl.SSLError as exc:
            _handshake_failed(resumption, tls == "implicit")
            raise TLSFailure(f"TLS with {host}:{port} failed: {ssl_reason(exc)}") from exc
        except OSError as exc:
            _handshake_failed(resumption, tls == "implicit")
            raise ConnectionLost(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
        client = cls(
            host,
            proto,
            pipelining=pipelining,
            window=window,
            line_ending=line_ending,
            max_body=max_body,
        )
        client._encrypted = tls == "implicit"
        client._verified = client._encrypted and _verifies(ctx)
        client._capa_memo = capa_memo
        client._resumption = resumption
        try:
            await client._start(tls, ctx, connect_timeout)
        except BaseException:
            client.abort()
            raise
        return client

    async def _start(self, tls: TLSMode, ctx: ssl.SSLContext | None, hs_seconds: float) -> None:
        event = await self._next()
        if not isinstance(event, Greeting):  # pragma: no cover - the framer guarantees it
            raise RemoteProtocolError("expected a greeting")
        if not event.ok:
            raise self._error("greeting", event.status)
        # No TCP_NODELAY here: asyncio's and uvloop's TCP transports (under TLS too) turn Nagle
        # off themselves, and setting it again was a system call per session.
        if tls == "starttls":
            assert ctx is not None
            await self.capa()  # always asked: it is what says STLS is there
            await self._starttls(ctx, hs_seconds)
        else:
            await self._capa_before_login()

    async def _capa_before_login(self) -> None:
        """CAPA, or the account's memo of it when that is fresh and from a connection as
        encrypted as this one (`CapaMemo`)."""
        memo, now = self._capa_memo, time.monotonic()
        if (
            memo is not None
            and memo.caps is not None
            and memo.encrypted == self._encrypted
            and now - memo.asked_at < CAPA_MEMO_AGE
        ):
            self._caps, self._capa_ok, self._capa_assumed = memo.caps, True, True
            return
        await self.capa()
        if memo is not None:
            answered = self._caps if self._capa_ok else None
            memo.caps, memo.encrypted, memo.asked_at = answered, self._encrypted, now

    async def _starttls(self, ctx: ssl.SSLContext, hs_seconds: float) -> None:
        if "STLS" not in self._caps:
            raise TLSFailure(
                f"{self.host} does not offer STLS; refusing to continue without TLS "
                "(use pop3s on port 995, or tls='none' only if you accept plaintext)"
            )
        status = await self._simple(Command("STLS"))
        del status
        # The core has already refused bytes that came with the +OK; bytes that arrived since
        # are just as untrustworthy.
        if self._io.buffered():
            raise RemoteProtocolError("server sent data after its STLS reply, before TLS")
        transport = self._io.transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        try:
            with _offering(self._resumption):
                new = await loop.start_tls(
                    transport,
                    self._io,
                    ctx,
                    server_hostname=self.host,
                    ssl_handshake_timeout=hs_seconds,
                )
        except ssl.SSLError as exc:
            _handshake_failed(self._resumption)
            raise TLSFailure(f"TLS with {self.host} failed: {ssl_reason(exc)}") from exc
        except (OSError, TimeoutError) as exc:
            _handshake_failed(self._resumption)
            raise TLSFailure(f"TLS handshake with {self.host} did not complete: {exc}") from exc
        if new is None:  # pragma: no cover
            raise TLSFailure("TLS handshake did not produce a transport")
        self._io.transport = new
        self._conn.tls_started()
        self._encrypted = True
        self._verified = _verifies(ctx)
        self._caps = {}  # RFC 2595 §4: forget what was said before TLS
        await self._capa_before_login()

    # -- properties ------------------------------------------------------------------------
    @property
    def greeting(self) -> Greeting:
        assert self._conn.greeting is not None
        return self._conn.greeting

    @property
    def capabilities(self) -> dict[str, tuple[str, ...]]:
        return dict(self._caps)

    @property
    def encrypted(self) -> bool:
        return self._encrypted

    @property
    def state(self) -> State:
        return self._conn.state

    def _ssl_object(self) -> ssl.SSLObject | None:
        if self._io.transport is None:
            return None
        obj: ssl.SSLObject | None = self._io.transport.get_extra_info("ssl_object")
        return obj

    @property
    def tls_resumed(self) -> bool:
        """Whether this connection's TLS handshake resumed an earlier session."""
        obj = self._ssl_object()
        return obj is not None and obj.session_reused

    def _keep_session(self) -> None:
        """The connection is ending: its context's session cache learns how this handshake
        went (`Resumption.finished`), once."""
        if self._resumption is not None:
            self._resumption.finished(self._ssl_object())
            self._resumption = None

    @property
    def tls_version(self) -> str | None:
        obj = self._ssl_object()
        return obj.version() if obj is not None else None

    @property
    def tls_cipher(self) -> str | None:
        obj = self._ssl_object()
        cipher = obj.cipher() if obj is not None else None
        return cipher[0] if cipher else None

    # -- capabilities and login ------------------------------------------------------------
    async def capa(self) -> dict[str, tuple[str, ...]]:
        """Ask CAPA; a server without it (-ERR) just has no known capabilities (RFC 2449 §5)."""
        self._capa_due = False
        await self._capa()
        return dict(self._caps)

    @property
    def offer(self) -> Offer:
        """What this server offers on this connection, for `bridge.pop3.mechanisms`."""
        return Offer.of(
            self._caps,
            apop=self.greeting.timestamp is not None,
            encrypted=self._encrypted,
            verified=self._verified,
        )

    async def login(
        self,
        username: str,
        password: str | None = None,
        *,
        mechanism: str = "auto",
        allow_plaintext: bool = False,
        token: TokenSource | None = None,
        skip: Collection[str] = (),
        lazy_capa: bool = False,
        ahead: tuple[Command, ...] = (),
    ) -> None:
        """Authenticate; on success the session is in TRANSACTION and CAPA has been re-read.

        With `lazy_capa` and a server whose CAPA lists PIPELINING, that CAPA goes out with the
        next command, in the same write (RFC 2449 §6.6; §5 has every capability announced
        before login announced after it too, PIPELINING included): an idle poll saves a round
        trip. Until that command, `capabilities` and `login_delay` still show the list from
        before login; `detach()` needs the CAPA read, so the proxy does not use this.

        `ahead` (with `lazy_capa`): the commands the caller sends first once logged in (the
        poller's STAT and UIDL). When the server listed PIPELINING, the mechanism's last line
        is known (USER/PASS's PASS, APOP, PLAIN, CRAM-MD5) and the `CapaMemo` has not seen this
        server lose them, the CAPA and these go out in the same write as that line, before its
        reply (RFC 2449 §6.6; `ClientConnection.send_behind_login`): one round trip fewer.
        Nothing in them is secret, and the secret itself goes out exactly as it would alone,
        after the same checks. The login's reply is read first; when it is refused,
        their replies (given in AUTHORIZATION) are read and dropped, so the connection goes on
        as it would have without them. The CAPA's reply is read here; the caller's own send
        of `ahead` then writes nothing and it reads their replies as usual. A session whose
        login got no answer to them (timeout, hang-up, a challenge after the last line) turns
        this off for the memo's account.

        `token` is an OAuth access token (or a function, possibly async, returning one) for
        XOAUTH2/OAUTHBEARER. Mechanisms that expose the secret are refused on an unencrypted
        link unless `allow_plaintext=True`.

        With `mechanism="auto"` every mechanism `bridge.pop3.mechanisms.auto_order` allows is
        tried in turn, on this connection, while the refusals say another may work; `skip`
        leaves out those an earlier connection tried. When the server hangs up on a refused
        attempt the `AuthenticationFailed` raised carries `tried` and `untried` (the mechanisms
        left), so the caller can go on over a new connection (`login_with_fallback`).

        When the CAPA list came from the account's memo (`CapaMemo`) and the login is refused,
        the memo is forgotten and, if the connection is still in AUTHORIZATION, CAPA is asked
        now: a list that differs from the memo's is a server that changed, and the login starts
        again from it (leaving out the mechanisms already refused); the same list means the
        refusal stands.
        """
        try:
            await self._login(
                username, password, mechanism, allow_plaintext, token, skip, lazy_capa, ahead
            )
        except AuthenticationFailed as exc:
            if not self._capa_assumed:
                raise
            self.forget_assumed_capa()
            self._capa_assumed = False
            if self._closed or self.state is not State.AUTHORIZATION:
                raise
            assumed = self._caps
            await self.capa()
            if self._caps == assumed:
                raise
            log.info(
                "%s's capabilities changed since its last connection; logging in again",
                self.host,
            )
            # A refusal of what the server no longer offers says nothing about the secret, so
            # only refusals of mechanisms it still offers count against the others.
            offer = self.offer
            tried = [m for m in (*skip, *exc.tried) if offer.offers(m)]
            await self._login(
                username, password, mechanism, allow_plaintext, token, tried, lazy_capa, ahead
            )

    async def _login(
        self,
        username: str,
        password: str | None,
        mechanism: str,
        allow_plaintext: bool,
        token: TokenSource | None,
        skip: Collection[str],
        lazy_capa: bool,
        ahead: tuple[Command, ...],
    ) -> None:
        """`login` on this connection's capabilities as they are."""
        mech = normalise_mechanism(mechanism)
        if mech != "AUTO":
            check_allowed(
                mech, encrypted=self._encrypted, allow_plaintext=allow_plaintext, host=self.host
            )
            check_offered(mech, self.offer, capa_known=self._capa_ok, host=self.host)
            await self._login_with(mech, username, password, token, lazy_capa, ahead)
            return
        order = auto_order(
            self.offer,
            password=password is not None,
            token=token is not None,
            allow_plaintext=allow_plaintext,
            host=self.host,
        )
        left = after_refusal(order, skip)
        if not left:
            raise LocalProtocolError(f"every mechanism {self.host} offers was tried: {order}")
        tried = list(skip)
        while True:
            mech = left.pop(0)
            check_allowed(
                mech, encrypted=self._encrypted, allow_plaintext=allow_plaintext, host=self.host
            )
            try:
                await self._login_with(mech, username, password, token, lazy_capa, ahead)
            except AuthenticationFailed as exc:
                if exc.unanswered:
                    left.insert(0, mech)
                else:
                    tried.append(mech)
                    left = after_refusal(left, tried) if falls_back(exc) else []
                exc.tried, exc.untried = tuple(tried), tuple(left)
                if left and not self._closed and self.state is State.AUTHORIZATION:
                    log.info(
                        "%s refused by %s; trying %s",
                        mech,
                        self.host,
                        left[0],
                        extra={"mechanism": mech, "next": left[0]},
                    )
                    continue
                raise
            if tried:
                self.forget_assumed_capa()  # a memo that sends the next login astray
                log.info(
                    "logged in to %s with %s after %s was refused",
                    self.host,
                    mech,
                    ", ".join(tried),
                    extra={"mechanism": mech},
                )
            return

    async def _login_with(
        self,
        mech: str,
        username: str,
        password: str | None,
        token: TokenSource | None,
        lazy_capa: bool = False,
        ahead: tuple[Command, ...] = (),
    ) -> None:
        answered = self._events
        memo = self._capa_memo
        behind: tuple[Command, ...] = ()
        if (
            ahead
            and lazy_capa
            and self.pipelining
            and mech in _LAST_LINE_KNOWN
            and (memo is None or memo.behind_login)
        ):
            behind = (Command("CAPA"), *ahead)
        self._behind_out = False
        try:
            if mech == "USER":
                await self._simple(Command("USER", (username,)))
                await self._last(Command("PASS", (_need(password),)), behind)
            elif mech == "APOP":
                timestamp = self.greeting.timestamp
                if timestamp is None:
                    raise LocalProtocolError(f"{self.host}'s greeting has no APOP timestamp")
                digest = apop_digest(timestamp, _need(password))
                await self._last(Command("APOP", (username, digest)), behind)
            else:
                await self._sasl(await self._mechanism(mech, username, password, token), behind)
        except ConnectionLost as exc:
            # Some servers hang up on a failed login instead of answering (S7).
            self._lost_behind(memo)
            self.abort()
            error = AuthenticationFailed(f"{self.host} closed the connection during {mech} login")
            # Gone before a word about this mechanism (it hung up on the previous one): not
            # refused, so `auth: auto` tries it again on a new connection.
            error.unanswered = self._events == answered
            raise error from exc
        except BaseException as exc:
            if self._behind_out:
                await self._settle_behind(exc, memo)
            raise
        self.mechanism = mech
        if self._behind_out:
            try:
                await self._capa_reply()
            except ConnectionLost:  # a read timeout too
                self._lost_behind(memo)
                self.abort()
                raise
            self._ahead = ahead
            return
        # Some servers advertise more once logged in (UIDL, PIPELINING): CAPA again, now or
        # with the next command (`lazy_capa`).
        if lazy_capa and self.pipelining:
            self._capa_due = True
        else:
            await self.capa()

    async def _settle_behind(self, exc: BaseException, memo: CapaMemo | None) -> None:
        """The login whose last line carried commands failed with `exc`. Refused (-ERR), the
        session is still in AUTHORIZATION and the server answers them in turn (-ERR, or CAPA's
        list): their replies are read and dropped, so the next mechanism may go on over this
        connection as it would have. Anything else drops the connection."""
        if isinstance(exc, ResponseError):
            try:
                while self._conn.outstanding:
                    await self._status()
                    if self._conn.in_body:
                        await self._body()
                return
            except ConnectionLost:  # hung up after refusing (S7), or no answers (timeout)
                pass
            except RemoteProtocolError:
                self._lost_behind(memo)
        elif isinstance(exc, RemoteProtocolError):
            self._lost_behind(memo)  # e.g. a challenge after the last answer
        self.abort()

    def _lost_behind(self, memo: CapaMemo | None) -> None:
        """No answer came to commands sent behind the login: not again for this account."""
        if self._behind_out and memo is not None:
            memo.behind_login = False

    async def _last(self, command: Command, behind: tuple[Command, ...]) -> None:
        """`_simple(command)` for a login's last line, with `behind` in the same write."""
        if not behind:
            await self._simple(command)
            return
        conn = self._conn
        await self._write(conn.send(command) + conn.send_behind_login(behind))
        self._behind_out = True
        status = await self._status()
        if not status.ok:
            raise self._error(command.verb, status)

    async def _mechanism(
        self, mech: str, username: str, password: str | None, token: TokenSource | None
    ) -> Mechanism:
        if mech == "PLAIN":
            return Plain(username, _need(password))
        if mech == "LOGIN":
            return Login(username, _need(password))
        if mech == "CRAM-MD5":
            return CramMD5(username, _need(password))
        if token is None:
            raise LocalProtocolError(f"{mech} needs an OAuth access token")
        value = token if isinstance(token, str) else token()
        if inspect.isawaitable(value):
            value = await value
        assert isinstance(value, str)
        if mech == "XOAUTH2":
            return XOAuth2(username, value)
        return OAuthBearer(username, value, host=self.host)

    async def _sasl(self, mech: Mechanism, behind: tuple[Command, ...] = ()) -> None:
        """One AUTH exchange; `behind` goes out with its last line (`_LAST_LINE_KNOWN`: the
        AUTH line when it carries the initial response, else the answer to the first
        challenge)."""
        conn = self._conn
        args = auth_command(mech, allow_initial_response="SASL" in self._caps)
        ir_pending = len(args) == 1 and mech.initial_response() is not None
        if behind and len(args) == 2:
            await self._write(conn.send(Command("AUTH", args)) + conn.send_behind_login(behind))
            self._behind_out = True
        else:
            await self._send(Command("AUTH", args))
        while True:
            event = await self._next()
            if isinstance(event, StatusResponse):
                if event.ok:
                    return
                detail = getattr(mech, "error", None)
                error = self._error("AUTH", event)
                if detail:
                    error.args = (f"{error.args[0]} ({_oauth_status(detail)})",)
                raise error
            if isinstance(event, ConnectionClosed):
                raise ConnectionLost("server closed the connection during AUTH")
            if not isinstance(event, Continuation):
                raise RemoteProtocolError(f"unexpected {type(event).__name__} during AUTH")
            try:
                challenge = decode_challenge(event.data)
                if ir_pending:
                    ir_pending = False
                    answer: bytes = mech.initial_response() or b""
                else:
                    answer = mech.respond(challenge)
            except RemoteProtocolError:
                # RFC 5034 §4: a challenge we cannot handle is answered with a cancel.
                await self._write(conn.send_auth_response(None))
                continue
            line = conn.send_auth_response(encode_response(answer))
            if behind and not self._behind_out:
                line += conn.send_behind_login(behind)
                self._behind_out = True
            await self._write(line)

    # -- transaction -----------------------------------------------------------------------
    async def stat(self) -> tuple[int, int]:
        return parse_stat(await self._simple(Command("STAT")))

    async def list(self, number: int | None = None) -> builtins.list[tuple[int, int]]:
        if number is not None:
            status = await self._simple(Command("LIST", (str(number),)))
            return [parse_list_line(status.text.encode())]
        _, body = await self._multi(Command("LIST"))
        return parse_list(body)

    async def uidl(
        self,
        *,
        header_id: Callable[[bytes], str] | None = None,
        messages: int | None = None,
    ) -> builtins.list[tuple[int, str]]:
        """(number, uid) for every message.

        A server without UIDL (or one that leaves ids out) gets ids derived from each
        message's headers by `header_id` (read with pipelined `TOP n 0`); the poller passes
        `bridge.mail.header_uid`. Without `header_id` such messages keep an empty uid.

        With `messages` (STAT's count) the answer may be at most `UIDL_LINE_MAX` octets per
        message: a server listing far more entries than it has messages is dropped with
        `RemoteProtocolError` before it can fill memory.
        """
        await self._send(Command("UIDL"))
        return await self._uidl_reply(header_id, messages)

    async def stat_uidl(
        self, *, header_id: Callable[[bytes], str] | None = None
    ) -> tuple[tuple[int, int], builtins.list[tuple[int, str]]]:
        """STAT, then `uidl(header_id=..., messages=<STAT's count>)`: what a poll starts with.

        When the server pipelines, both go out in one write (with the CAPA a `lazy_capa` login
        owes), and STAT's count still bounds the UIDL answer, which is read after it. An -ERR
        to STAT then leaves UIDL's reply in flight, so the connection is dropped (nothing is
        committed) before the error is raised.
        """
        if not self.pipelining:
            stat = await self.stat()
            return stat, await self.uidl(header_id=header_id, messages=stat[0])
        await self._send_all(STAT_UIDL)
        try:
            status = await self._status()
            if not status.ok:
                raise self._error("STAT", status)
            stat = parse_stat(status)
        except BaseException:
            self.abort()  # UIDL's reply would be read as the answer to the next command
            raise
        return stat, await self._uidl_reply(header_id, stat[0])

    async def _uidl_reply(
        self, header_id: Callable[[bytes], str] | None, messages: int | None
    ) -> builtins.list[tuple[int, str]]:
        """UIDL's reply as (number, uid) entries; a server without UIDL gets LIST's numbers
        with empty ids. A plain +OK is read whole (`_plain`), anything else by events."""
        limit = None if messages is None else (messages + 1) * UIDL_LINE_MAX
        body = await self._plain(limit)
        if body is None and not self._conn.in_body:  # not a plain +OK: its status line first
            status = await self._status()
            if not status.ok and (status.has_code("SYS") or status.has_code("IN-USE")):
                raise self._error("UIDL", status)
        if body is None and self._conn.in_body:  # a +OK whose body is to be read by events
            body = await self._body(limit)
        entries = parse_uidl(body) if body is not None else [(n, "") for n, _ in await self.list()]
        missing = [n for n, uid in entries if not uid]
        if missing and header_id is not None:
            self.uidl_fallback = True
            derived = {n: header_id(headers) async for n, headers in self.top_many(missing, 0)}
            entries = [(n, uid or derived[n]) for n, uid in entries]
        return entries

    async def retrieve(self, number: int) -> bytes:
        return (await self._multi(Command("RETR", (str(number),))))[1]

    async def top(self, number: int, lines: int) -> bytes:
        return (await self._multi(Command("TOP", (str(number), str(lines)))))[1]

    async def top_many(
        self, numbers: Iterable[int], lines: int
    ) -> AsyncIterator[tuple[int, bytes]]:
        """Yield (number, headers + `lines` body lines) in order; pipelined when allowed."""
        wanted = list(numbers)
        commands = [Command("TOP", (str(n), str(lines))) for n in wanted]
        async for items in self._batch(wanted, commands):
            for item in items:
                yield item

    async def retrieve_many(self, numbers: Iterable[int]) -> AsyncIterator[tuple[int, bytes]]:
        """Yield (number, message) in order; pipelined when the server allows it."""
        async for items in self.retrieve_batches(numbers):
            for item in items:
                yield item

    async def retrieve_batches(
        self, numbers: Iterable[int]
    ) -> AsyncIterator[builtins.list[tuple[int, bytes]]]:
        """`retrieve_many` in lists, every message already read in full in one (the poller's
        fetch: one await and one yield per read of the socket, not per message)."""
        wanted = list(numbers)
        commands = [Command("RETR", (str(n),)) for n in wanted]
        async for items in self._batch(wanted, commands):
            yield items

    async def delete(self, number: int) -> None:
        await self._simple(Command("DELE", (str(number),)))

    async def delete_many(self, numbers: Iterable[int]) -> None:
        wanted = list(numbers)
        commands = [Command("DELE", (str(n),)) for n in wanted]
        async for _ in self._batch(wanted, commands):
            pass

    async def rset(self) -> None:
        await self._simple(Command("RSET"))

    async def noop(self) -> None:
        await self._simple(Command("NOOP"))

    # -- ending ----------------------------------------------------------------------------
    async def quit(self, *, confirm: bool = True) -> None:
        """Send QUIT: commits deletions (and, on some servers, retrievals). Closes the link.

        On a connection already dropped nothing can be committed, so that is `ConnectionLost`,
        never a silent return: a caller records deletions only after QUIT returned.

        `confirm=False` is for a session that has nothing to commit (no DELE, no RETR): QUIT
        still goes out (RFC 1939 §6: the session ends in UPDATE, as for any client), but the
        connection is closed once it is written instead of after its +OK, whose content could
        change nothing the caller does: one read and one wake-up fewer per idle poll. The
        server answers into a closed socket (RFC 1939 lets either side close after QUIT).
        """
        if self._closed:
            raise ConnectionLost(
                "QUIT was not sent: the connection was already closed, so the server "
                "committed nothing (no DELE took effect)"
            )
        if not confirm:
            try:
                await self._send(Command("QUIT"))
            finally:
                self._close_after_write()
            return
        try:
            await self._send(Command("QUIT"))
            status = await self._status()
        finally:
            self.abort()
        if not status.ok:
            raise self._error("QUIT", status)

    def _close_after_write(self) -> None:
        """Close the connection once what was written is sent (`abort` would drop it)."""
        self._keep_session()
        self._closed = True
        transport = self._io.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def detach(self) -> StreamProtocol:
        """Hand the open connection over (the proxy relays on it after logging in here).

        Only between replies: with a command outstanding the new owner would read its reply as
        the answer to something else. The client is closed afterwards and sends nothing more.
        """
        busy = self._conn.outstanding or self._conn.buffered()
        if self._closed or busy or self._io.transport is None:
            raise LocalProtocolError("detach needs an open connection with no reply outstanding")
        self._keep_session()
        self._closed = True
        return self._io

    def abort(self) -> None:
        self._keep_session()
        super().abort()

    async def close(self, commit: bool = True) -> None:
        if commit:
            await self.quit()
        else:
            self.abort()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


async def login_with_fallback(
    connect: Callable[[], Awaitable[POP3Client]],
    username: str,
    password: str | None = None,
    *,
    mechanism: str = "auto",
    allow_plaintext: bool = False,
    token: TokenSource | None = None,
    lazy_capa: bool = False,
    ahead: tuple[Command, ...] = (),
) -> POP3Client:
    """`connect()`, then `login` (`lazy_capa` and `ahead` are passed on); a logged-in client,
    or the error that ended the last try.

    RFC 1939 and RFC 5034 leave the session in AUTHORIZATION after a refused APOP or AUTH, so
    `login` tries the next mechanism on the same connection. Some servers hang up instead;
    then, with `mechanism="auto"`, a new connection goes on with the mechanisms not yet tried
    (at most one per kind of secret, see `bridge.pop3.mechanisms`).
    """
    tried: tuple[str, ...] = ()
    while True:
        client = await connect()
        try:
            await client.login(
                username,
                password,
                mechanism=mechanism,
                allow_plaintext=allow_plaintext,
                token=token,
                skip=tried,
                lazy_capa=lazy_capa,
                ahead=ahead,
            )
        except AuthenticationFailed as exc:
            client.abort()
            if exc.untried and mechanism.upper() == "AUTO" and exc.tried != tried:
                log.info(
                    "%s closed the connection after %s was refused; trying %s on a new one",
                    client.host,
                    exc.tried[-1],
                    exc.untried[0],
                )
                tried = exc.tried
                continue
            raise
        except BaseException:
            client.abort()
            raise
        return client


# Mechanisms whose last line the client knows before the server answers it: `login(ahead=...)`
# may send commands behind it. LOGIN (two answers) and the OAuth mechanisms (an error comes as
# a challenge to be answered) are left out.
_LAST_LINE_KNOWN = frozenset({"USER", "APOP", "PLAIN", "CRAM-MD5"})


def _offering(resumption: Resumption | None) -> contextlib.AbstractContextManager[None]:
    """Around a handshake's `create_connection` / `start_tls`: what it may resume."""
    return contextlib.nullcontext() if resumption is None else resumption.active()


def _handshake_failed(resumption: Resumption | None, handshake: bool = True) -> None:
    """Connecting failed while a TLS `handshake` may have been under way: its key's session
    goes (a server that mishandles the ticket gets a full handshake next time)."""
    if resumption is not None and handshake:
        resumption.failed()


def _verifies(ctx: ssl.SSLContext | None) -> bool:
    """Whether TLS with `ctx` checks the server's certificate and host name."""
    return ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def _need(password: str | None) -> str:
    if password is None:
        raise LocalProtocolError("this mechanism needs a password")
    return password


def _oauth_status(detail: bytes) -> str:
    import json

    try:
        data = json.loads(detail)
    except ValueError:
        return "server sent an unreadable error report"
    if isinstance(data, dict):
        return f"OAuth status {data.get('status', '?')}"
    return "server sent an unreadable error report"

"""The asyncio glue of one proxied session: it only moves bytes between the two legs and the relay.

Memory stays bounded whatever the message size: each leg's protocol stops reading the socket
once about 1 MiB is buffered unread, and every batch of relay output is written and drained
before the next read from the other side, so a client that reads slowly slows the upstream
read instead of filling the proxy. Output is written as soon as the relay produces it (a flush
per response, per chunk of a long one), with TCP_NODELAY on both legs so small replies are not
held back by Nagle's algorithm waiting for delayed ACKs.

Upstream connections go through `POP3Client.connect` (greeting, STLS, certificate checks all in
one place) and are then taken over with `detach()`. Certificates are verified unless the route
says `insecure`. Closing never sends QUIT on the client's behalf: a session that ends any other
way than by the client's own QUIT leaves the mailbox unchanged (RFC 1939 §6).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from bridge.config import ProxyUpstream
from bridge.pop3.client import POP3Client, login_with_fallback
from bridge.pop3.errors import ConnectionLost, POP3Error, ResponseError
from bridge.pop3.stream import StreamProtocol
from bridge.pop3.tls import shared_client_context
from bridge.pop3.wire import LineEnding, ResponseFramer
from bridge.proxy.handler import ProxyHandler, ProxySession
from bridge.proxy.log import SessionLog
from bridge.proxy.policy import Policy
from bridge.proxy.relay import MAX_CAPA_BODY, UPSTREAM_LOST, Actions, CaptureSink, Relay
from bridge.proxy.routing import Route, RoutingTable, UnknownUser

__all__ = ["SessionSettings", "TapFactory", "connect_upstream", "run_session", "set_nodelay"]

log = logging.getLogger("bridge.proxy")

_ids = itertools.count(1)
_PREFIX = os.urandom(3).hex()
UPSTREAM_DOWN = b"-ERR [SYS/TEMP] upstream server unavailable, try again later\r\n"
IDLE_CLOSE = b"-ERR [SYS/TEMP] autologout: idle for too long\r\n"

# (route, listener, user, msgno) -> capture or None
TapFactory = Callable[[Route, str, str | None, int], CaptureSink | None]


def new_session_id() -> str:
    return f"{_PREFIX}-{next(_ids)}"


def set_nodelay(proto: StreamProtocol) -> None:
    sock = proto.transport.get_extra_info("socket") if proto.transport else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True, slots=True)
class SessionSettings:
    listener: str
    routes: RoutingTable
    fixed: bool
    offer_stls: bool
    client_tls: ssl.SSLContext | None  # for STLS on a plain listener
    default_policy: Policy
    log_commands: bool
    connect_timeout: float = 30.0
    handler: ProxyHandler | None = None  # the relay's hooks (the proxy server)
    taps: bool = False  # the handler copies RETRs of routes that have a `tap`


def upstream_name(up: ProxyUpstream) -> str:
    return f"{up.host}:{up.port}"


# One deadline for everything before relaying starts: connect, greeting, CAPA and (routing)
# the login. Per-read timeouts alone let an upstream that trickles a line at a time hold a
# client (and its slot) for ever (issue 19).
UPSTREAM_SETUP_DEADLINE = 30.0


async def connect_upstream(up: ProxyUpstream, connect_timeout: float) -> POP3Client:
    """A logged-out client for `up`. Its multi-line answers (the CAPA read at connect) are
    capped like the client-facing CAPA: an endless one from a hostile upstream is cut, not
    buffered until memory runs out. The TLS context is the one every leg with the same
    `ca_file`/`insecure` shares (`shared_client_context`): building one per session loads the
    CA store again, about 22 ms of CPU with the system store."""
    ctx = None if up.tls == "none" else shared_client_context(up.ca_file, up.insecure)
    return await POP3Client.connect(
        up.host,
        up.port,
        tls=up.tls,
        ssl_context=ctx,
        ca_file=up.ca_file,
        insecure=up.insecure,
        connect_timeout=connect_timeout,
        read_timeout=connect_timeout,
        max_body=MAX_CAPA_BODY,
        tls_resume=up.tls_resume,
    )


@contextlib.asynccontextmanager
async def setup_deadline(seconds: float) -> AsyncIterator[None]:
    """`ConnectionLost` once `seconds` have passed inside the block."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise ConnectionLost(
            f"the upstream did not get through connect, greeting, CAPA and login within "
            f"{seconds:g}s"
        ) from None


class _Closed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Session:
    def __init__(
        self,
        client: StreamProtocol,
        settings: SessionSettings,
        slog: SessionLog,
        idle_timeout: float,
        initial: bytes,
        session: ProxySession,
    ) -> None:
        self.client = client
        self.settings = settings
        self.session = session
        self.slog = slog
        self.idle = idle_timeout
        self.initial = initial
        self.upstream: StreamProtocol | None = None
        self.relay: Relay | None = None
        self.route: Route | None = None
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.progress = asyncio.Event()
        self.upstream_task: asyncio.Task[None] | None = None
        self.tasks: list[asyncio.Future[None]] = []
        # Set by the first task to end with a reason. A task started later (the upstream pump
        # after a routing login) must be able to end the session too, so the session waits on
        # this rather than on a list of tasks taken before that task existed.
        self.ended: asyncio.Future[str] = self.loop.create_future()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(self._task_done)
        self.tasks.append(task)
        return task

    def _task_done(self, task: asyncio.Future[None]) -> None:
        if task.cancelled() or self.ended.done():
            return
        exc = task.exception()
        if exc is None:
            return  # the client pump after a half-close: the relay still decides the end
        if isinstance(exc, _Closed):
            self.ended.set_result(exc.reason)
            return
        log.error("proxy session failed", extra={"session": self.slog.session}, exc_info=exc)
        self.ended.set_result(f"internal error: {type(exc).__name__}")

    # -- writing -----------------------------------------------------------------------------
    async def _send(self, proto: StreamProtocol, data: bytes) -> None:
        proto.write(data)
        if proto.writing_paused:  # skip a coroutine per write when there is nothing to wait for
            await proto.drain()
        self.last = self.loop.time()

    async def apply(self, actions: Actions) -> None:
        relay = self.relay
        assert relay is not None
        while True:
            if actions.exchanges:
                self.slog.user = relay.user or self.slog.user
                self.slog.exchanges(actions.exchanges)
            if actions.to_upstream and self.upstream is not None:
                data = b"".join(actions.to_upstream)
                self.slog.sent(upstream=len(data))
                try:
                    await self._send(self.upstream, data)
                except ConnectionLost:
                    relay.upstream_data(b"")
                    actions = relay.take()
                    continue
            if actions.start_client_tls and self.client.transport is not None:
                # Read nothing more in clear text: the client's next bytes are its ClientHello.
                self.client.transport.pause_reading()
            if actions.to_client:
                data = b"".join(actions.to_client)
                self.slog.sent(downstream=len(data))
                try:
                    await self._send(self.client, data)
                except ConnectionLost:
                    raise _Closed("client connection lost") from None
            self.progress.set()
            if actions.close is not None:
                raise _Closed(actions.close)
            if actions.start_client_tls:
                await self._client_tls()
                relay.tls_started()
            elif actions.login is not None:
                await self._login(actions)
            else:
                return
            actions = relay.take()

    # -- TLS and login -------------------------------------------------------------------------
    async def _client_tls(self) -> None:
        ctx = self.settings.client_tls
        assert ctx is not None and self.client.transport is not None
        if self.client.buffered():
            raise _Closed("data after STLS")
        try:
            new = await self.loop.start_tls(
                self.client.transport, self.client, ctx, server_side=True, ssl_handshake_timeout=30
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            raise _Closed(f"client TLS handshake failed: {exc}") from None
        if new is None:  # pragma: no cover
            raise _Closed("client TLS handshake failed")
        self.client.transport = new

    async def _login(self, actions: Actions) -> None:
        relay = self.relay
        assert relay is not None and actions.login is not None
        creds = actions.login
        try:
            route = self.settings.routes.lookup(creds.user)
        except UnknownUser:
            relay.login_finished(
                reply=b"-ERR [AUTH] unknown user or wrong password\r\n", upstream=None
            )
            return
        self.slog.upstream = upstream_name(route.upstream)
        reply: bytes
        connected = False

        async def connect() -> POP3Client:
            nonlocal connected
            client = await connect_upstream(route.upstream, self.settings.connect_timeout)
            connected = True
            return client

        try:
            # `auth: auto` tries the next mechanism the upstream offers when one is refused.
            async with setup_deadline(UPSTREAM_SETUP_DEADLINE):
                client = await login_with_fallback(
                    connect,
                    route.upstream_user(creds.user),
                    creds.password,
                    mechanism=route.upstream.auth,
                    allow_plaintext=route.upstream.tls == "none",
                )
        except ResponseError as exc:
            reply = exc.status.raw if exc.status is not None else b"-ERR [AUTH] login failed\r\n"
            if not reply.endswith(b"\n"):
                reply += b"\r\n"
            relay.login_finished(reply=reply, upstream=None)
            return
        except POP3Error as exc:
            what = "upstream login failed" if connected else "upstream unavailable"
            log.warning(what, extra={"session": self.slog.session, "error": str(exc)})
            relay.login_finished(reply=UPSTREAM_DOWN, upstream=None)
            return
        self.route = route
        line_ending: LineEnding = "lf" if client.greeting.bare_lf else "crlf"
        self.upstream = client.detach()
        self.upstream.read_timeout = None
        self._enter_route(route)
        relay.login_finished(
            reply=b"+OK logged in\r\n",
            upstream=ResponseFramer(line_ending=line_ending, expect_greeting=False),
        )
        self.upstream_task = self._spawn(self._upstream_pump())

    def _enter_route(self, route: Route) -> None:
        """From now on the session runs under `route`'s policy and tap."""
        session = self.session
        session.route = route
        session.policy = route.policy
        session.tapping = self.settings.taps and route.tap is not None

    # -- pumps ---------------------------------------------------------------------------------
    async def _client_pump(self) -> None:
        relay = self.relay
        assert relay is not None
        if self.initial:
            relay.client_data(self.initial)
            await self.apply(relay.take())
        while True:
            while not relay.wants_client_data():
                self.progress.clear()
                await self.progress.wait()
            try:
                data = await self.client.read()
            except ConnectionLost:
                raise _Closed("client connection lost") from None
            self.last = self.loop.time()
            relay.client_data(data)
            await self.apply(relay.take())
            if not data:
                return  # half-closed: the relay closes once the last reply is out

    async def _upstream_pump(self) -> None:
        relay, upstream = self.relay, self.upstream
        assert relay is not None and upstream is not None
        while True:
            try:
                data = await upstream.read()
            except ConnectionLost:
                data = b""
            self.last = self.loop.time()
            relay.upstream_data(data)
            await self.apply(relay.take())
            if not data:
                raise _Closed("upstream closed the connection")

    async def _watchdog(self) -> None:
        while True:
            remaining = self.last + self.idle - self.loop.time()
            if remaining <= 0:
                with contextlib.suppress(ConnectionLost):
                    self.client.write(IDLE_CLOSE)
                raise _Closed("idle timeout")
            await asyncio.sleep(remaining)

    async def run(self) -> str:
        settings = self.settings
        if settings.fixed:
            route = settings.routes.lookup("")
            self.slog.upstream = upstream_name(route.upstream)
            try:
                async with setup_deadline(UPSTREAM_SETUP_DEADLINE):
                    upstream = await connect_upstream(route.upstream, settings.connect_timeout)
            except POP3Error as exc:
                log.warning(
                    "upstream unavailable", extra={"session": self.slog.session, "error": str(exc)}
                )
                with contextlib.suppress(ConnectionLost):
                    await self._send(self.client, UPSTREAM_DOWN)
                return "upstream unavailable"
            greeting = upstream.greeting
            self.route = route
            self.upstream = upstream.detach()
            self.upstream.read_timeout = None
            framer = ResponseFramer(
                line_ending="lf" if greeting.bare_lf else "crlf", expect_greeting=False
            )
            self.relay = self._relay(framer, route)
            try:
                await self._send(self.client, greeting.raw)
            except ConnectionLost:
                return "client connection lost"
            self.slog.sent(downstream=len(greeting.raw))
            self.upstream_task = self._spawn(self._upstream_pump())
        else:
            self.relay = self._relay(None, None)
            hello = b"+OK POP3 proxy ready\r\n"
            try:
                await self._send(self.client, hello)
            except ConnectionLost:
                return "client connection lost"
            self.slog.sent(downstream=len(hello))
        self._spawn(self._client_pump())
        self._spawn(self._watchdog())
        try:
            return await self.ended
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def _relay(self, framer: ResponseFramer | None, route: Route | None) -> Relay:
        if route is not None:
            self._enter_route(route)
        tls = self.client.transport.get_extra_info("ssl_object") if self.client.transport else None
        return Relay(
            session=self.session,
            upstream=framer,
            handler=self.settings.handler,
            offer_stls=self.settings.offer_stls,
            encrypted=tls is not None,
        )

    def close(self) -> None:
        for proto in (self.client, self.upstream):
            if proto is not None and proto.transport is not None:
                proto.transport.close()


async def run_session(
    client: StreamProtocol,
    settings: SessionSettings,
    slog: SessionLog,
    *,
    idle_timeout: float,
    initial: bytes = b"",
    session: ProxySession | None = None,
) -> str:
    """Serve one accepted client connection to the end; returns why it ended.

    `initial` holds bytes already read from the client (after a PROXY protocol header);
    `session` is what the handler is asked about (a fresh one under the default policy if
    not given).
    """
    set_nodelay(client)
    if session is None:
        session = ProxySession(settings.default_policy, settings.listener)
    glue = _Session(client, settings, slog, idle_timeout, initial, session)
    try:
        return await glue.run()
    except asyncio.CancelledError:
        return "shutdown"
    finally:
        glue.close()


__all__ += ["IDLE_CLOSE", "UPSTREAM_DOWN", "UPSTREAM_LOST", "new_session_id"]

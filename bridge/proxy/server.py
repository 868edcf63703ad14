"""The proxy's listeners: accept, read a PROXY header if configured, apply connection limits,
set up TLS, and run one session per client; graceful shutdown.

No byte may be read by the wrong layer: an implicit-TLS listener has TLS from the first byte
(`create_server(ssl=...)`); a PROXY-protocol listener accepts sockets itself, takes the clear-text
header off with MSG_PEEK and a read of exactly its length, and only then attaches a transport
(with TLS when the listener is implicit). Pausing a transport in `connection_made` is not enough:
uvloop starts reading right after that callback, and a ClientHello that arrived with the header
would land in the plain-text buffer. Limits count the real client address, from the PROXY header
when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bridge.config import ProxyConfig, ProxyListener
from bridge.lifecycle import Service
from bridge.pop3.errors import ConnectionLost
from bridge.pop3.stream import StreamProtocol
from bridge.proxy.handler import ProxySession
from bridge.proxy.log import SessionLog
from bridge.proxy.policy import Policy
from bridge.proxy.proxy_protocol import MAX_HEADER, ProxyProtocolError, parse_proxy_header
from bridge.proxy.relay import CaptureSink
from bridge.proxy.routing import RoutingTable, UnknownUser, policy_rules
from bridge.proxy.session import SessionSettings, TapFactory, new_session_id, run_session

__all__ = ["ProxyServer", "ProxyStartError", "server_tls_context"]

log = logging.getLogger("bridge.proxy")

TOO_MANY_FROM_IP = b"-ERR [SYS/TEMP] too many connections from your address\r\n"
PROXY_HEADER_TIMEOUT = 10.0
TLS_HANDSHAKE_TIMEOUT = 30.0


class ProxyStartError(OSError):
    """A listener cannot be set up (port taken, unreadable certificate); says which."""


def server_tls_context(listener: ProxyListener) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(listener.cert_file), str(listener.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ProxyStartError(
            f"listener {listener.name!r}: cannot load cert_file/key_file: {exc}"
        ) from None
    return ctx


@dataclass
class _Listener:
    config: ProxyListener
    tls: ssl.SSLContext | None
    server: asyncio.Server | None = None
    sock: socket.socket | None = None  # PROXY protocol listeners accept by hand
    accept_task: asyncio.Task[None] | None = None
    address: tuple[str, int] | None = None
    settings: SessionSettings | None = field(default=None, repr=False)

    @property
    def serving(self) -> bool:
        if self.server is not None:
            return self.server.is_serving()
        return self.accept_task is not None and not self.accept_task.done()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.accept_task is not None:
            self.accept_task.cancel()
        if self.sock is not None:
            self.sock.close()


class ProxyServer(Service):
    """All listeners of one `proxy:` section. `start()`, then `stop(grace)` (bridge.lifecycle)."""

    def __init__(self, config: ProxyConfig, *, tap: TapFactory | None = None) -> None:
        super().__init__()
        self.config = config
        self.policy = Policy(policy_rules(config.policy))
        fixed = config.upstream is not None
        self.routes = (
            RoutingTable.fixed(config)
            if fixed
            else RoutingTable(config.routes or [], config.policy)
        )
        self._fixed = fixed
        self._tap = tap
        self._listeners: list[_Listener] = []
        self._per_ip: Counter[str] = Counter()
        self._per_user: Counter[str] = Counter()

    # -- lifecycle (bridge.lifecycle.Service: start / ready / stop) ----------------------------
    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        for cfg in self.config.listeners:
            tls = server_tls_context(cfg) if cfg.cert_file and cfg.key_file else None
            entry = _Listener(cfg, tls)
            entry.settings = SessionSettings(
                listener=cfg.name,
                routes=self.routes,
                fixed=self._fixed,
                offer_stls=cfg.starttls and cfg.tls != "implicit",
                client_tls=tls,
                default_policy=self.policy,
                log_commands=self.config.log_commands,
                handler=self,
                taps=self._tap is not None,
            )
            try:
                if cfg.proxy_protocol:
                    entry.sock = socket.create_server((cfg.host, cfg.port), backlog=512)
                    entry.sock.setblocking(False)
                    bound = entry.sock.getsockname()
                    entry.accept_task = asyncio.ensure_future(self._accept_loop(entry))
                else:
                    entry.server = await loop.create_server(
                        lambda e=entry: self._accepted(e),
                        cfg.host,
                        cfg.port,
                        reuse_address=True,
                        backlog=512,
                        ssl=tls if cfg.tls == "implicit" else None,
                        ssl_handshake_timeout=(
                            TLS_HANDSHAKE_TIMEOUT if cfg.tls == "implicit" else None
                        ),
                    )
                    bound = entry.server.sockets[0].getsockname()
            except OSError as exc:
                # The base stops what was set up (with no grace) when _start raises.
                raise ProxyStartError(
                    exc.errno,
                    f"listener {cfg.name!r} cannot listen on {cfg.host}:{cfg.port} "
                    f"({exc.strerror}); set proxy.listeners[].port",
                ) from None
            entry.address = (str(bound[0]), int(bound[1]))
            self._listeners.append(entry)
            log.info(
                "proxy listening",
                extra={
                    "listener": cfg.name,
                    "host": entry.address[0],
                    "port": entry.address[1],
                    "tls": cfg.tls,
                    "starttls": cfg.starttls,
                    "proxy_protocol": cfg.proxy_protocol,
                },
            )

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        """Listener name -> bound (host, port); with port 0 this is where it really listens."""
        return {e.config.name: e.address for e in self._listeners if e.address is not None}

    async def ready(self) -> bool:
        """Readiness: every configured listener is bound and serving."""
        return (
            self.running
            and len(self._listeners) == len(self.config.listeners)
            and all(e.serving for e in self._listeners)
        )

    async def status(self) -> dict[str, Any]:
        return {
            "listeners": {
                name: {"host": host, "port": port} for name, (host, port) in self.addresses.items()
            },
            "sessions": self.task_count,
        }

    @property
    def session_count(self) -> int:
        return self.task_count

    def _grace(self, grace: float | None) -> float:
        return self.config.shutdown_grace if grace is None else grace

    async def _stop(self, grace: float | None) -> None:
        """Stop accepting; the base gives running sessions the grace, then closes the rest."""
        for entry in self._listeners:
            entry.close()
        if self.task_count and self._grace(grace) > 0:
            log.info("proxy stopping: waiting for sessions", extra={"sessions": self.task_count})

    async def _finish(self) -> None:
        for entry in self._listeners:
            if entry.server is not None:
                with contextlib.suppress(Exception):
                    await entry.server.wait_closed()

    # -- sessions ------------------------------------------------------------------------------
    def _accepted(
        self, listener: _Listener, client: tuple[str, int] | None = None
    ) -> StreamProtocol:
        """The protocol of one accepted client connection; its session starts once connected.

        `client` is the address from a PROXY header (else the TCP peer's is used). Half-close
        is allowed: a client that half-closes after its last command still reads the replies.
        """

        def start(proto: StreamProtocol) -> None:
            self._spawn(proto, listener, client)

        return StreamProtocol(None, on_connect=start, half_close=True)

    def _spawn(
        self, proto: StreamProtocol, listener: _Listener, client: tuple[str, int] | None
    ) -> None:
        if self.stopping:
            if proto.transport is not None:
                proto.transport.close()
            return
        self.track(asyncio.ensure_future(self._serve(proto, listener, client)))

    # -- the relay's hooks (bridge.proxy.handler.ProxyHandler) --------------------------------
    def handle_LOGIN(self, session: ProxySession, user: str) -> bool:
        """Count the login for the per-user limit; False (nothing counted) when over it.

        One claim per session: a second login under another name (after a failed one) moves
        it; `_session` gives it back when the session ends.
        """
        key = user.lower()
        if session.claimed == key:
            return True
        if not self.claim_user(user):
            return False
        if session.claimed is not None:
            self._release_user(session.claimed)
        session.claimed = key
        return True

    def handle_RETR(self, session: ProxySession, msgno: int) -> CaptureSink | None:
        """The tap's capture of this retrieved message (asked only when the route has a tap)."""
        if self._tap is None or session.route is None:
            return None
        return self._tap(session.route, session.listener, session.user, msgno)

    def claim_user(self, user: str) -> bool:
        """Count a login for per-user limits; False (nothing counted) when over the limit.

        The limit is the user's route policy's (routes may set their own), falling back to the
        top-level policy for a name no route matches. The per-IP limit can only be the top-level
        one: it is checked at accept, before any user name is known.
        """
        try:
            limit = self.routes.lookup(user).policy.rules.max_connections_per_user
        except UnknownUser:
            limit = self.config.policy.max_connections_per_user
        key = user.lower()
        if limit is not None and self._per_user[key] >= limit:
            return False
        self._per_user[key] += 1
        return True

    def _release_user(self, key: str) -> None:
        self._per_user[key] -= 1
        if self._per_user[key] <= 0:
            del self._per_user[key]

    async def _serve(
        self, proto: StreamProtocol, listener: _Listener, client: tuple[str, int] | None
    ) -> None:
        assert proto.transport is not None
        peer = proto.transport.get_extra_info("peername") or ("?", 0)
        await self._session(proto, listener, client or (str(peer[0]), int(peer[1])))

    async def _accept_loop(self, listener: _Listener) -> None:
        """Accept by hand so the PROXY header can be taken off each socket before any transport
        (plain or TLS) reads from it."""
        loop = asyncio.get_running_loop()
        assert listener.sock is not None
        while True:
            try:
                conn, _ = await loop.sock_accept(listener.sock)
            except OSError as exc:
                if listener.sock.fileno() < 0:
                    return
                log.warning(
                    "accept failed", extra={"listener": listener.config.name, "error": str(exc)}
                )
                await asyncio.sleep(0.1)
                continue
            self.track(asyncio.ensure_future(self._behind_balancer(conn, listener)))

    async def _behind_balancer(self, conn: socket.socket, listener: _Listener) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        got = await _read_proxy_header(conn)
        if got is None or self.stopping:
            conn.close()
            return
        cfg = listener.config
        peer = conn.getpeername()
        client = got[0] or (str(peer[0]), int(peer[1]))
        try:
            await loop.connect_accepted_socket(
                lambda: self._accepted(listener, client),
                conn,
                ssl=listener.tls if cfg.tls == "implicit" else None,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if cfg.tls == "implicit" else None,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.info(
                "client dropped before the session started",
                extra={"listener": cfg.name, "client": client[0], "error": str(exc)},
            )
            conn.close()

    async def _session(
        self, proto: StreamProtocol, listener: _Listener, client: tuple[str, int]
    ) -> None:
        assert proto.transport is not None and listener.settings is not None
        ip = client[0]
        limit = self.config.policy.max_connections_per_ip
        if limit is not None and self._per_ip[ip] >= limit:
            log.warning(
                "connection refused: per-IP limit",
                extra={"listener": listener.config.name, "client": ip},
            )
            with contextlib.suppress(ConnectionLost):
                proto.write(TOO_MANY_FROM_IP)
            proto.transport.close()
            return
        self._per_ip[ip] += 1
        settings = listener.settings
        session = ProxySession(settings.default_policy, settings.listener, client)
        slog = SessionLog(
            new_session_id(),
            f"{ip}:{client[1]}",
            listener.config.name,
            log_commands=self.config.log_commands,
        )
        slog.opened()
        reason = "internal error"
        try:
            reason = await run_session(
                proto, settings, slog, idle_timeout=self.config.policy.idle_timeout, session=session
            )
        finally:
            self._per_ip[ip] -= 1
            if self._per_ip[ip] <= 0:
                del self._per_ip[ip]
            if session.claimed is not None:
                self._release_user(session.claimed)
            slog.closed(reason)


async def _read_proxy_header(conn: socket.socket) -> tuple[tuple[str, int] | None] | None:
    """Take the PROXY header, and not one byte more, off a freshly accepted socket.

    Returns (real client address, or None for LOCAL/UNKNOWN,), or None when the header is bad,
    missing or late (the caller closes). The header is peeked at with MSG_PEEK and then consumed
    by exactly its length, so whatever the client sent after it (a TLS ClientHello, a
    pipelined command) stays in the kernel for the transport that reads the session.
    """
    loop = asyncio.get_running_loop()
    seen = 0
    try:
        async with asyncio.timeout(PROXY_HEADER_TIMEOUT):
            while True:
                ready = loop.create_future()
                loop.add_reader(conn.fileno(), ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_reader(conn.fileno())
                data = conn.recv(MAX_HEADER + 1, socket.MSG_PEEK)
                if not data:
                    return None
                result = parse_proxy_header(data)
                if result is not None:
                    info, used = result
                    conn.recv(used)
                    if info is None:
                        return (None,)
                    return ((str(info.source[0]), int(info.source[1])),)
                if len(data) > MAX_HEADER:
                    raise ProxyProtocolError("PROXY header too long")
                if len(data) == seen:
                    await asyncio.sleep(0.01)  # peeked bytes keep the socket readable
                seen = len(data)
    except TimeoutError:
        log.info("no PROXY protocol header in time; connection closed")
        return None
    except ProxyProtocolError as exc:
        log.info("bad PROXY protocol header; connection closed", extra={"error": str(exc)})
        with contextlib.suppress(OSError):
            conn.recv(MAX_HEADER + 1)  # read what was refused, so closing is a FIN, not a reset
        return None
    except OSError as exc:
        log.info("client dropped before the PROXY header", extra={"error": str(exc)})
        return None

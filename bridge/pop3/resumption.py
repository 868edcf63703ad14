"""TLS session resumption for the POP3 client: which session a new connection may offer.

Theory of operation
-------------------
A poll of an idle mailbox is a short session, and over TLS its full handshake (key exchange,
then the server's certificate chain checked against the trust anchors) is a large part of the
client's CPU. A server that handed out a session (a TLS 1.2 ticket or session id, a TLS 1.3
ticket) lets the next connection prove it holds that session's secret instead: an abbreviated
handshake, no certificate sent or verified.

What it costs in Python: `SSLObject.session` (reading a connection's session) and offering one
(`wrap_bio(session=...)`) each copy the session by encoding and re-parsing it, peer
certificate included: about 1.6 M instructions (135 us) each with CPython 3.11 and OpenSSL
3.0, against ~5.9 M for a whole full handshake and ~4.1 M for a resumed one, offer included
(measured on this project's machine, callgrind). So a session is read only when there is none
worth keeping, and offered only where offers have been taken: reading and offering on every
connection cost more than resumption saved, and against a server that never resumes (Dovecot's
default config) it would make every handshake half as expensive again.

The rules, said once:

1. **One cache per context.** A `ResumingContext` owns a `SessionCache`; a session verified by
   one context (its trust anchors, `insecure` or not) is never offered through another. The
   shared contexts are rebuilt when their CA file changes and hourly, and their sessions go
   with them.
2. **Keyed by (host, port, server name).** Only a session made with the same server name is
   offered: OpenSSL resumes a session offered for another name without checking that name
   (the certificate is not sent again), so this key is what keeps a name the certificate does
   not cover failing, whatever is cached.
3. **Bounded in age.** An entry is offered until the earlier of the session's own lifetime
   (the server's timeout or ticket lifetime hint) and `RESUME_MAX_AGE` after its full
   handshake verified the certificate. Resumed connections leave the entry as it is (their
   sessions are not read), so the certificate is verified again at least that often.
4. **Bounded in number.** At most `RESUME_CAP` keys, least recently used first out. An entry
   holds the server's certificate (about 14 kB of RSS measured here); every account on one
   server shares its entry.
5. **Kept while it works.** A resumed connection changes nothing. A full handshake where none
   was offered reads its session and keeps it (unless an entry appeared meanwhile). An offer
   turned down is a miss: the new session replaces the entry, and after `MISS_LIMIT` misses in
   a row, or a session that cannot be resumed, the key is parked for `PARK_SECONDS`: no
   offers, no reads. A server that never resumes (Dovecot with its default one login process
   per connection) costs two reads and two offers per `PARK_SECONDS`; one that resumes only
   sometimes (Dovecot with several long-lived login processes, each with its own ticket key)
   soon parks too, which is right: an offer pays only when most are taken.
6. **Failure forgets.** A handshake that fails (verification or anything else) drops the key's
   entry. Concurrent connections to one server offer the same ticket: servers with stateless
   tickets (the OpenSSL default) resume each; a server that takes a ticket once turns the
   others down, and rule 5 parks it.

The session is read when the connection ends (TLS 1.3 tickets arrive after the handshake; in
POP3 before the greeting).

Plumbing: asyncio (CPython 3.11 `asyncio/sslproto.py`) and uvloop (`sslproto.pyx`) build each
connection's `SSLObject` with `context.wrap_bio(incoming, outgoing, server_side=...,
server_hostname=...)` and take no session themselves, so `ResumingContext.wrap_bio` supplies
it. Which entry a connection may use travels in a context variable set around
`create_connection` / `start_tls` (`Resumption.active`): asyncio calls `wrap_bio` inside those
calls, uvloop from a callback run in a copy of the context `create_connection` was called in
(the transport's, for `start_tls` too), so the variable is set before both.

Not done: tickets are not rotated between concurrent connections, and early data (0-RTT) is
never sent.
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = [
    "MISS_LIMIT",
    "PARK_SECONDS",
    "RESUME_CAP",
    "RESUME_MAX_AGE",
    "ResumingContext",
    "Resumption",
    "SessionCache",
    "SessionKey",
    "resumable",
]

# The longest a certificate check is trusted for resumed connections: the shared contexts'
# own rebuild period (`bridge.pop3.tls.SHARED_CONTEXT_MAX_AGE`), so nothing about a server's
# certificate is trusted for longer than the trust anchors it was checked against.
RESUME_MAX_AGE = 3600.0

# Keys kept per context. 1,024 entries at ~14 kB each is ~14 MB at most; accounts on the same
# server share one.
RESUME_CAP = 1024

# Offers turned down in a row before a key is parked, and for how long (rule 5).
MISS_LIMIT = 2
PARK_SECONDS = 600.0

SessionKey = tuple[str, int, str]  # (host, port, server_hostname)


@dataclass(frozen=True, slots=True)
class Entry:
    """A key's state: a session to offer (or None: parked) until `expires`, and how many
    offers of it in a row were turned down."""

    session: ssl.SSLSession | None
    expires: float
    misses: int = 0


def resumable(session: ssl.SSLSession | None, version: str | None) -> bool:
    """Whether a server could resume `session`: TLS 1.3 only with a ticket (before the ticket
    arrives the session is a placeholder), TLS 1.2 with a ticket or a session id."""
    if session is None:
        return False
    if version == "TLSv1.3":
        return session.has_ticket
    return session.has_ticket or bool(session.id)


def lifetime(session: ssl.SSLSession) -> float:
    """How long the server said `session` may be resumed, in seconds from its creation."""
    seconds = float(session.timeout)
    if session.has_ticket and session.ticket_lifetime_hint:
        seconds = min(seconds, float(session.ticket_lifetime_hint))
    return seconds


class SessionCache:
    """Each `SessionKey`'s session, or its parking (rules 3-6 of the module docstring). Pure:
    no I/O, and the clocks are injected."""

    def __init__(
        self,
        *,
        cap: int = RESUME_CAP,
        max_age: float = RESUME_MAX_AGE,
        park_seconds: float = PARK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cap = cap
        self.max_age = max_age
        self.park_seconds = park_seconds
        self.clock = clock
        self.wall = wall  # `SSLSession.time` is wall-clock seconds
        self._entries: OrderedDict[SessionKey, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: SessionKey) -> Entry | None:
        """`key`'s entry (a session, or parked), if it has not expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.clock() >= entry.expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: SessionKey, session: ssl.SSLSession, misses: int = 0) -> None:
        """Keep `session`, just verified by a full handshake, for `key`."""
        now = self.clock()
        left = session.time + lifetime(session) - self.wall()
        expires = now + min(left, self.max_age)
        if expires <= now:
            self._entries.pop(key, None)
            return
        self._set(key, Entry(session, expires, misses))

    def park(self, key: SessionKey) -> None:
        """No offers and no reads for `key` for `park_seconds`."""
        self._set(key, Entry(None, self.clock() + self.park_seconds))

    def taken(self, key: SessionKey, entry: Entry) -> None:
        """`entry`'s session was resumed: its misses start again from none."""
        if entry.misses and self._entries.get(key) is entry:
            self._entries[key] = Entry(entry.session, entry.expires)

    def drop(self, key: SessionKey) -> None:
        self._entries.pop(key, None)

    def _set(self, key: SessionKey, entry: Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.cap:
            self._entries.popitem(last=False)


# The connection being set up in this context (see the module docstring's "Plumbing").
_current: contextvars.ContextVar[Resumption | None] = contextvars.ContextVar(
    "pop3_tls_resumption", default=None
)


class ResumingContext(ssl.SSLContext):
    """A client `SSLContext` that offers its cached sessions to the connections set up with
    `Resumption.active`; everything else about it is a plain `ssl.SSLContext`."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        # `ssl.SSLContext` is built by `__new__`, which takes the protocol; nothing to pass on.
        self.sessions = SessionCache()

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        current = _current.get()
        if session is None and current is not None and not server_side:
            session = current.offer(self, server_hostname)
        return super().wrap_bio(
            incoming,
            outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
        )


class Resumption:
    """One connection's part in its context's cache: what it offered, and what it leaves."""

    __slots__ = ("_done", "_parked", "ctx", "key", "offered")

    def __init__(self, ctx: ResumingContext, host: str, port: int, server_hostname: str) -> None:
        self.ctx = ctx
        self.key: SessionKey = (host, port, server_hostname)
        self.offered: Entry | None = None
        self._parked = False
        self._done = False

    @classmethod
    def for_context(
        cls, ctx: ssl.SSLContext | None, host: str, port: int, enabled: bool = True
    ) -> Resumption | None:
        """A `Resumption` when `ctx` keeps sessions and resumption is `enabled`, else None."""
        if not enabled or not isinstance(ctx, ResumingContext):
            return None
        return cls(ctx, host, port, host)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Around `create_connection` / `start_tls`: their `wrap_bio` may offer this key's
        session."""
        token = _current.set(self)
        try:
            yield
        finally:
            _current.reset(token)

    def offer(
        self, ctx: ssl.SSLContext, server_hostname: str | bytes | None
    ) -> ssl.SSLSession | None:
        """The session `ctx.wrap_bio` should offer: only this key's, only through the context
        that keeps it, only for the very name it was made with (rules 1 and 2)."""
        if ctx is not self.ctx or server_hostname != self.key[2]:
            return None
        entry = self.ctx.sessions.get(self.key)
        if entry is None:
            return None
        if entry.session is None:
            self._parked = True
            return None
        self.offered = entry
        return entry.session

    def failed(self) -> None:
        """The handshake failed: forget the key's session (rule 6)."""
        self._done = True
        self.ctx.sessions.drop(self.key)

    def finished(self, sslobj: ssl.SSLObject | None) -> None:
        """The connection is ending: what its handshake says about the key (rule 5). Once."""
        if self._done or sslobj is None or self._parked:
            return
        self._done = True
        cache, key, offered = self.ctx.sessions, self.key, self.offered
        if offered is not None and sslobj.session_reused:
            cache.taken(key, offered)
            return
        misses = 0 if offered is None else offered.misses + 1
        if misses >= MISS_LIMIT:
            cache.park(key)
            return
        if offered is None and cache.get(key) is not None:
            return  # another connection has kept a session (or parked the key) meanwhile
        session = sslobj.session  # the costly read (see the module docstring)
        if resumable(session, sslobj.version()):
            assert session is not None
            cache.put(key, session, misses)
        else:
            cache.park(key)

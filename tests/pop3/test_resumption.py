"""`bridge.pop3.resumption`: the session cache's keying, cap, ages and forgetting, on fake
sessions and a fake clock (the handshakes themselves: test_client_tls_resume.py)."""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from typing import cast

from bridge.pop3.resumption import (
    ResumingContext,
    Resumption,
    SessionCache,
    SessionKey,
    resumable,
)

WALL0 = 1_800_000_000.0


@dataclass
class FakeSession:
    """What the cache reads of an `ssl.SSLSession`."""

    time: float = WALL0
    timeout: int = 7200
    has_ticket: bool = True
    ticket_lifetime_hint: int = 7200
    id: bytes = b"\x01" * 32


def session(**kw: object) -> ssl.SSLSession:
    return cast(ssl.SSLSession, FakeSession(**kw))  # type: ignore[arg-type]


class Clocks:
    """Monotonic and wall clocks that advance together."""

    def __init__(self) -> None:
        self.mono = 100.0

    def wall(self) -> float:
        return WALL0 + self.mono - 100.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds


def cache(clocks: Clocks, **kw: float) -> SessionCache:
    return SessionCache(clock=lambda: clocks.mono, wall=clocks.wall, **kw)  # type: ignore[arg-type]


A: SessionKey = ("mail.example", 995, "mail.example")


def test_a_session_is_offered_only_for_its_own_host_port_and_name() -> None:
    clocks = Clocks()
    c = cache(clocks)
    s = session()
    c.put(A, s)
    entry = c.get(A)
    assert entry is not None and entry.session is s
    assert c.get(("mail.example", 110, "mail.example")) is None
    assert c.get(("mail.example", 995, "other.example")) is None
    assert c.get(("other.example", 995, "mail.example")) is None


def test_the_cap_evicts_the_least_recently_used() -> None:
    clocks = Clocks()
    c = cache(clocks, cap=2)
    keys = [(f"h{i}", 995, f"h{i}") for i in range(3)]
    c.put(keys[0], session())
    c.put(keys[1], session())
    assert c.get(keys[0]) is not None  # keys[1] is now the least recently used
    c.put(keys[2], session())
    assert len(c) == 2
    assert c.get(keys[1]) is None
    assert c.get(keys[0]) is not None and c.get(keys[2]) is not None


def test_an_entry_expires_with_the_servers_lifetime() -> None:
    clocks = Clocks()
    c = cache(clocks, max_age=3600)
    c.put(A, session(timeout=300, ticket_lifetime_hint=120))  # the shorter one counts
    clocks.advance(119)
    assert c.get(A) is not None
    clocks.advance(1)
    assert c.get(A) is None
    assert len(c) == 0


def test_the_lifetime_counts_from_the_sessions_creation_not_from_storing_it() -> None:
    clocks = Clocks()
    c = cache(clocks)
    # A session the server made 250 s ago with a 300 s lifetime (TLS 1.2, resumed and
    # stored again): 50 s left.
    c.put(A, session(time=clocks.wall() - 250, timeout=300, has_ticket=False))
    clocks.advance(49)
    assert c.get(A) is not None
    clocks.advance(1)
    assert c.get(A) is None


def test_an_entry_expires_max_age_after_its_full_handshake() -> None:
    clocks = Clocks()
    c = cache(clocks, max_age=600)
    c.put(A, session())  # the server would allow 7,200 s
    clocks.advance(599)
    assert c.get(A) is not None
    clocks.advance(1)
    assert c.get(A) is None


def test_a_parked_key_offers_nothing_until_its_time_is_up() -> None:
    clocks = Clocks()
    c = cache(clocks, park_seconds=60)
    c.park(A)
    entry = c.get(A)
    assert entry is not None and entry.session is None
    clocks.advance(60)
    assert c.get(A) is None


def test_an_already_expired_session_replaces_nothing_and_drop_forgets() -> None:
    clocks = Clocks()
    c = cache(clocks)
    c.put(A, session())
    c.put(A, session(time=clocks.wall() - 400, timeout=300))
    assert c.get(A) is None
    c.put(A, session())
    c.drop(A)
    assert c.get(A) is None


def test_resumable() -> None:
    assert not resumable(None, "TLSv1.3")
    # TLS 1.3 before its ticket arrived: a placeholder, not resumable.
    assert not resumable(session(has_ticket=False), "TLSv1.3")
    assert resumable(session(), "TLSv1.3")
    assert resumable(session(has_ticket=False), "TLSv1.2")  # by session id
    assert not resumable(session(has_ticket=False, id=b""), "TLSv1.2")


def test_offers_only_through_the_keeping_context_and_for_the_same_name() -> None:
    ctx, other = ResumingContext(ssl.PROTOCOL_TLS_CLIENT), ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    s = session()
    ctx.sessions.put(("h", 995, "h"), s)
    r = Resumption(ctx, "h", 995, "h")
    assert r.offer(other, "h") is None  # another context: other trust anchors
    assert r.offer(ctx, "other") is None  # another name
    assert r.offered is None
    assert r.offer(ctx, "h") is s
    assert r.offered is not None


class CountingSSLObject:
    """An `SSLObject` stand-in that counts reads of `session` (each costs ~1.6 M instructions
    in CPython 3.11 with OpenSSL 3.0)."""

    def __init__(self, session: ssl.SSLSession | None, reused: bool, tls: str = "TLSv1.3"):
        self._session = session
        self.session_reused = reused
        self.tls = tls
        self.reads = 0

    @property
    def session(self) -> ssl.SSLSession | None:
        self.reads += 1
        return self._session

    def version(self) -> str:
        return self.tls


def _connect(
    ctx: ResumingContext, key: SessionKey, obj: CountingSSLObject
) -> ssl.SSLSession | None:
    """One connection's part: what it offered; `obj` says how its handshake went."""
    r = Resumption(ctx, key[0], key[1], key[2])
    offered = r.offer(ctx, key[2])
    r.finished(obj)  # type: ignore[arg-type]
    r.finished(obj)  # type: ignore[arg-type]  # once only
    return offered


def test_a_resuming_server_keeps_one_session_and_it_is_read_once() -> None:
    clocks = Clocks()
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.sessions = cache(clocks)
    key = ("h", 995, "h")
    s1 = session()
    first = CountingSSLObject(s1, reused=False)
    assert _connect(ctx, key, first) is None and first.reads == 1
    for _ in range(3):
        clocks.advance(60)
        later = CountingSSLObject(session(time=clocks.wall()), reused=True)
        assert _connect(ctx, key, later) is s1
        assert later.reads == 0  # a resumed connection's session is never read
    entry = ctx.sessions.get(key)
    assert entry is not None and entry.session is s1


def test_a_server_that_never_resumes_is_parked_after_two_misses() -> None:
    clocks = Clocks()
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.sessions = cache(clocks, park_seconds=600)
    key = ("h", 995, "h")
    objs = [CountingSSLObject(session(), reused=False) for _ in range(6)]
    offered = [_connect(ctx, key, obj) for obj in objs]
    assert [o is not None for o in offered] == [False, True, True, False, False, False]
    assert [obj.reads for obj in objs] == [1, 1, 0, 0, 0, 0]
    clocks.advance(600)  # parked no longer: one more read, and offers again
    again = CountingSSLObject(session(time=clocks.wall()), reused=False)
    assert _connect(ctx, key, again) is None and again.reads == 1
    assert _connect(ctx, key, CountingSSLObject(session(), reused=False)) is again._session


def test_a_miss_then_a_hit_starts_the_count_again() -> None:
    clocks = Clocks()
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.sessions = cache(clocks)
    key = ("h", 995, "h")
    _connect(ctx, key, CountingSSLObject(session(), reused=False))
    _connect(ctx, key, CountingSSLObject(session(), reused=False))  # a miss: replaced
    entry = ctx.sessions.get(key)
    assert entry is not None and entry.misses == 1
    _connect(ctx, key, CountingSSLObject(session(), reused=True))
    entry = ctx.sessions.get(key)
    assert entry is not None and entry.misses == 0 and entry.session is not None
    _connect(ctx, key, CountingSSLObject(session(), reused=False))  # one miss: not parked
    entry = ctx.sessions.get(key)
    assert entry is not None and entry.session is not None


def test_a_session_that_cannot_be_resumed_parks_the_key() -> None:
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    key = ("h", 995, "h")
    _connect(ctx, key, CountingSSLObject(session(has_ticket=False), reused=False))  # no ticket
    entry = ctx.sessions.get(key)
    assert entry is not None and entry.session is None


def test_a_full_handshake_leaves_a_session_another_connection_kept() -> None:
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    key = ("h", 995, "h")
    a, b = Resumption(ctx, *key), Resumption(ctx, *key)
    assert a.offer(ctx, "h") is None and b.offer(ctx, "h") is None  # both before any is kept
    kept = CountingSSLObject(session(time=time.time()), reused=False)
    a.finished(kept)  # type: ignore[arg-type]
    late = CountingSSLObject(session(time=time.time()), reused=False)
    b.finished(late)  # type: ignore[arg-type]
    entry = ctx.sessions.get(key)
    assert late.reads == 0 and entry is not None and entry.session is kept._session


def test_a_failed_handshake_forgets_the_keys_session() -> None:
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    key = ("h", 995, "h")
    ctx.sessions.put(key, session(time=time.time()))
    r = Resumption(ctx, *key)
    assert r.offer(ctx, "h") is not None
    r.failed()
    assert ctx.sessions.get(key) is None
    r.finished(CountingSSLObject(session(time=time.time()), reused=False))  # type: ignore[arg-type]
    assert ctx.sessions.get(key) is None  # nothing kept after a failure


def test_for_context_needs_a_resuming_context_and_consent() -> None:
    plain = ssl.create_default_context()
    resuming = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    assert Resumption.for_context(plain, "h", 995) is None
    assert Resumption.for_context(None, "h", 995) is None
    assert Resumption.for_context(resuming, "h", 995, enabled=False) is None
    r = Resumption.for_context(resuming, "h", 995)
    assert r is not None and r.key == ("h", 995, "h")

"""TLS session resumption end to end: `POP3Client` against a real Dovecot (POP3S and STLS) and
against an asyncio TLS server, on asyncio and on uvloop (which `pop3bridge run` uses, and
which calls `wrap_bio` from a callback, not inside `create_connection`).

Dovecot resumes only when the login process that issued a session takes the next connection
(`OneLoginProcessDovecot`); the suite's own Dovecot, like Dovecot's default config, never
does, which `test_the_default_dovecot_never_resumes` pins down.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
import trustme
import uvloop

from bridge.config import ProxyUpstream
from bridge.poller.login import tls_context
from bridge.poller.poll import poll_account
from bridge.pop3.client import POP3Client, TLSMode
from bridge.pop3.errors import TLSFailure
from bridge.pop3.resumption import ResumingContext
from bridge.pop3.tls import client_context
from bridge.proxy.session import connect_upstream
from bridge.store.base import Store
from bridge.testing.fakepop3 import FakePOP3Server
from tests.poller.conftest import dovecot_spec
from tests.support.certs import TestCerts
from tests.support.dovecot import (
    DovecotServer,
    DovecotUser,
    OneLoginProcessDovecot,
    running,
)

T = TypeVar("T")
LOOPS = ["asyncio", "uvloop"]


def run(loop: str, main: Callable[[], Awaitable[T]]) -> T:
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def resuming_dovecot(tls_certs: TestCerts) -> Iterator[DovecotServer]:
    with running(OneLoginProcessDovecot(tls_certs), "the one-login-process Dovecot") as server:
        yield server


def _port(server: DovecotServer, tls: TLSMode) -> int:
    return server.pop3s_port if tls == "implicit" else server.pop3_port


async def _session(
    ctx: ssl.SSLContext, host: str, port: int, tls: TLSMode, user: DovecotUser, **kw: bool
) -> bool:
    """One logged-in session; whether its handshake resumed."""
    client = await POP3Client.connect(host, port, tls=tls, ssl_context=ctx, **kw)
    async with client:
        resumed = client.tls_resumed
        await client.login(user.name, user.password)
        assert await client.stat() == (0, 0)
        await client.quit()
    return resumed


@pytest.mark.dovecot
@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_the_second_connection_resumes(
    resuming_dovecot: DovecotServer, tls_certs: TestCerts, loop: str, tls: TLSMode
) -> None:
    server = resuming_dovecot
    user = server.add_user()
    ctx = client_context(None, str(tls_certs.ca_file), False)  # a cache of its own
    port = _port(server, tls)

    async def main() -> list[bool]:
        return [
            await _session(ctx, server.host, port, tls, user),
            await _session(ctx, server.host, port, tls, user),
            await _session(ctx, server.host, port, tls, user),
            await _session(ctx, server.host, port, tls, user, tls_resume=False),
        ]

    assert run(loop, main) == [False, True, True, False]


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_the_default_dovecot_never_resumes(
    dovecot: DovecotServer, dovecot_user: DovecotUser, tls_certs: TestCerts, tls: TLSMode
) -> None:
    # A new login process per connection, each with its own ticket key and session cache:
    # the ticket is offered and turned down, every time.
    ctx = client_context(None, str(tls_certs.ca_file), False)
    port = _port(dovecot, tls)

    async def main() -> list[bool]:
        return [await _session(ctx, dovecot.host, port, tls, dovecot_user) for _ in range(3)]

    assert run("asyncio", main) == [False, False, False]
    # Offered twice, turned down twice: parked, so later connections neither offer a session
    # nor pay for reading theirs.
    assert isinstance(ctx, ResumingContext)
    entry = ctx.sessions.get((dovecot.host, port, dovecot.host))
    assert entry is not None and entry.session is None


@pytest.mark.dovecot
async def test_the_second_poll_resumes(resuming_dovecot: DovecotServer, store: Store) -> None:
    user = resuming_dovecot.add_user()
    spec = dovecot_spec(resuming_dovecot, user)
    ctx = tls_context(spec)
    assert isinstance(ctx, ResumingContext)
    key = (spec.host, resuming_dovecot.pop3s_port, spec.host)
    await poll_account(spec, store)
    first = ctx.sessions.get(key)
    assert first is not None
    await poll_account(spec, store)
    await poll_account(spec, store)
    second = ctx.sessions.get(key)
    # Still the first poll's session with no miss counted: the later polls' offers of it
    # were taken (a full handshake after an offer would have replaced it and counted a miss).
    assert second is not None and second.session is first.session and second.misses == 0

    off = dovecot_spec(resuming_dovecot, resuming_dovecot.add_user(), tls_resume=False)
    ctx.sessions.drop(key)
    await poll_account(off, store)
    assert ctx.sessions.get(key) is None  # nothing offered, nothing kept


@pytest.mark.dovecot
async def test_the_proxys_upstream_leg_resumes(
    resuming_dovecot: DovecotServer, tls_certs: TestCerts
) -> None:
    # The proxy's upstream legs use the shared context too (so an earlier test's session for
    # this server may already be there): once one leg has ended, the next resumes, and an
    # upstream with `tls_resume: false` does a full handshake.
    server = resuming_dovecot
    up = ProxyUpstream(host=server.host, port=server.pop3s_port, ca_file=str(tls_certs.ca_file))
    off = up.model_copy(update={"tls_resume": False})
    resumed = []
    for upstream in (up, up, off):
        client = await connect_upstream(upstream, 10.0)
        resumed.append(client.tls_resumed)
        client.abort()
    assert resumed[1:] == [True, False]


# -- an asyncio TLS server: resumes every connection (one SSLContext, OpenSSL's tickets) ------


def _localhost_only() -> tuple[trustme.CA, ssl.SSLContext]:
    """A CA and a server context whose certificate names `localhost` and nothing else."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    return ca, server


def _trusting(ca: trustme.CA) -> ResumingContext:
    ctx = client_context(None, None, False)
    assert isinstance(ctx, ResumingContext)
    ctx.load_verify_locations(cadata=ca.cert_pem.bytes().decode())
    return ctx


async def _fake_session(ctx: ssl.SSLContext, host: str, port: int, tls: TLSMode) -> bool:
    client = await POP3Client.connect(host, port, tls=tls, ssl_context=ctx)
    async with client:
        resumed = client.tls_resumed
        await client.login("user", "password")
        await client.quit()
    return resumed


def test_openssl_would_resume_a_session_for_another_name(tls_certs: TestCerts) -> None:
    """Why the cache is keyed by server name: offered a session made for `localhost`, a
    connection to a name the certificate does not cover resumes without any complaint (the
    certificate is not sent again, so nothing checks the name)."""
    ca, server_ctx = _localhost_only()

    async def main() -> tuple[bool, bool]:
        async with FakePOP3Server([], ssl_context=server_ctx, implicit_tls=True) as server:
            plain = ssl.create_default_context()
            ca.configure_trust(plain)
            loop = asyncio.get_running_loop()

            def hand(name: str, session: ssl.SSLSession | None) -> tuple[ssl.SSLSession, bool]:
                with (
                    socket.create_connection(("127.0.0.1", server.port)) as raw,
                    plain.wrap_socket(raw, server_hostname=name, session=session) as tls,
                ):
                    tls.recv(100)  # the greeting, after the TLS 1.3 tickets
                    assert tls.session is not None
                    return tls.session, tls.session_reused

            first, _ = await loop.run_in_executor(None, hand, "localhost", None)
            _, reused = await loop.run_in_executor(None, hand, "127.0.0.1", first)
            with pytest.raises(ssl.SSLCertVerificationError):
                await loop.run_in_executor(None, hand, "127.0.0.1", None)
            return first.has_ticket, reused

    assert run("asyncio", main) == (True, True)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_name_the_certificate_does_not_cover_fails_with_another_names_session_cached(
    loop: str,
) -> None:
    ca, server_ctx = _localhost_only()
    ctx = _trusting(ca)

    async def main() -> tuple[list[bool], str]:
        async with FakePOP3Server([], ssl_context=server_ctx, implicit_tls=True) as server:
            resumed = [await _fake_session(ctx, "localhost", server.port, "implicit")]
            resumed.append(await _fake_session(ctx, "localhost", server.port, "implicit"))
            with pytest.raises(TLSFailure) as failure:
                await _fake_session(ctx, "127.0.0.1", server.port, "implicit")
            # The localhost session is untouched: another key's failure drops only its own.
            resumed.append(await _fake_session(ctx, "localhost", server.port, "implicit"))
            return resumed, str(failure.value)

    resumed, error = run(loop, main)
    assert resumed == [False, True, True]
    assert "certificate verification failed" in error and "127.0.0.1" in error


@pytest.mark.parametrize("loop", LOOPS)
def test_a_failed_handshake_drops_the_session(loop: str) -> None:
    """The server's certificate changes to one from an unknown CA (a new server context, so
    its ticket key changes too): the offered session is refused, verification fails and the
    session is forgotten; back on the old context, the next handshake is a full one."""
    ca, good = _localhost_only()
    _, unknown = _localhost_only()
    ctx = _trusting(ca)

    async def main() -> tuple[list[bool], int]:
        async with FakePOP3Server([], ssl_context=good) as server:  # STLS
            resumed = [await _fake_session(ctx, "localhost", server.port, "starttls")]
            resumed.append(await _fake_session(ctx, "localhost", server.port, "starttls"))
            server.ssl_context = unknown
            with pytest.raises(TLSFailure, match="certificate verification failed"):
                await _fake_session(ctx, "localhost", server.port, "starttls")
            cached = len(ctx.sessions)
            server.ssl_context = good
            resumed.append(await _fake_session(ctx, "localhost", server.port, "starttls"))
            resumed.append(await _fake_session(ctx, "localhost", server.port, "starttls"))
            return resumed, cached

    resumed, cached_after_failure = run(loop, main)
    assert cached_after_failure == 0
    assert resumed == [False, True, False, True]

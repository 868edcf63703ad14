"""`auth: auto` on TLS whose certificate was verified: AUTH PLAIN with its initial response, a
login in one exchange. Unverified TLS is not "verified" (CRAM-MD5 stays ahead of PLAIN there:
tests/pop3/test_mechanisms.py, and Dovecot in test_client_dovecot.py)."""

from __future__ import annotations

import ssl

from bridge.pop3.client import POP3Client
from bridge.testing.fakepop3 import FakePOP3Server
from tests.support.certs import TestCerts


async def login_verbs(
    tls_certs: TestCerts, ctx: ssl.SSLContext
) -> tuple[str | None, bool, list[tuple[str, tuple[str, ...]]]]:
    async with FakePOP3Server(
        [], user="u", password="pw", ssl_context=tls_certs.server_context(), implicit_tls=True
    ) as server:
        client = await POP3Client.connect(server.host, server.port, ssl_context=ctx)
        async with client:
            await client.login("u", "pw")
            mechanism, verified = client.mechanism, client.offer.verified
            await client.quit()
    return mechanism, verified, server.commands_seen


async def test_verified_tls_logs_in_with_plain_in_one_exchange(tls_certs: TestCerts) -> None:
    mechanism, verified, commands = await login_verbs(tls_certs, tls_certs.client_context())
    assert mechanism == "PLAIN" and verified
    auth = [c for c in commands if c[0] in ("AUTH", "<sasl-response>", "APOP", "USER")]
    assert auth == [("AUTH", ("PLAIN", "<redacted>"))]  # the initial response on the line


async def test_unverified_tls_is_not_verified(tls_certs: TestCerts) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _, verified, _ = await login_verbs(tls_certs, ctx)
    assert not verified

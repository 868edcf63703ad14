"""POP3Client against a real, private Dovecot (plain, STLS, pop3s; USER/PASS, SASL, APOP)."""

from __future__ import annotations

import pytest

from bridge.pop3.client import POP3Client
from bridge.pop3.errors import AuthenticationFailed, InsecureAuthRefused, TLSFailure
from bridge.pop3.state import State

pytestmark = pytest.mark.dovecot


def message(i: int, size: int = 5000) -> bytes:
    body = b"".join(b".line %d of message %d\r\n" % (n, i) for n in range(size // 28))
    return b"Message-ID: <m%d@test>\r\nSubject: test %d\r\n\r\n" % (i, i) + body


async def test_plain_user_pass(dovecot, dovecot_user) -> None:
    dovecot.deliver_many(dovecot_user, [message(1), message(2)])
    client = await POP3Client.connect(dovecot.host, dovecot.pop3_port, tls="none")
    async with client:
        assert client.greeting.ok and client.greeting.timestamp  # APOP is enabled
        with pytest.raises(InsecureAuthRefused):
            await client.login(dovecot_user.name, dovecot_user.password, mechanism="USER")
        await client.login(
            dovecot_user.name, dovecot_user.password, mechanism="USER", allow_plaintext=True
        )
        assert client.state is State.TRANSACTION
        count, _size = await client.stat()
        assert count == 2
        # Dollar-dot lines come back un-stuffed, byte-exact.
        assert await client.retrieve(2) == message(2)
        uidls = await client.uidl()
        assert [n for n, _ in uidls] == [1, 2] and len({u for _, u in uidls}) == 2
        await client.quit()


async def test_starttls_then_sasl_plain(dovecot, dovecot_user) -> None:
    dovecot.deliver(dovecot_user, message(1))
    client = await POP3Client.connect(
        dovecot.host, dovecot.pop3_port, tls="starttls", ca_file=str(dovecot.ca_file)
    )
    async with client:
        assert client.encrypted and client.tls_version in ("TLSv1.2", "TLSv1.3")
        assert "STLS" not in client.capabilities  # re-read after the handshake
        await client.login(dovecot_user.name, dovecot_user.password, mechanism="PLAIN")
        assert client.mechanism == "PLAIN"
        assert (await client.list()) == [(1, len(message(1)))]
        await client.quit()


@pytest.mark.parametrize(("insecure", "expected"), [(False, "PLAIN"), (True, "CRAM-MD5")])
async def test_implicit_tls_auto_mechanism(dovecot, dovecot_user, insecure, expected) -> None:
    # A verified certificate: PLAIN with its initial response, one exchange. Unverified TLS
    # (a man in the middle could be the server): CRAM-MD5, which never sends the password.
    client = await POP3Client.connect(
        dovecot.host,
        dovecot.pop3s_port,
        tls="implicit",
        ca_file=None if insecure else str(dovecot.ca_file),
        insecure=insecure,
    )
    async with client:
        assert client.tls_cipher
        await client.login(dovecot_user.name, dovecot_user.password)
        assert client.mechanism == expected
        assert await client.stat() == (0, 0)


@pytest.mark.parametrize("mech", ["APOP", "CRAM-MD5", "LOGIN"])
async def test_other_mechanisms(dovecot, dovecot_user, mech: str) -> None:
    client = await POP3Client.connect(dovecot.host, dovecot.pop3_port, tls="none")
    async with client:
        await client.login(
            dovecot_user.name, dovecot_user.password, mechanism=mech, allow_plaintext=True
        )
        assert client.state is State.TRANSACTION


@pytest.mark.parametrize("pipelining", [True, False])
async def test_fetch_hundreds(dovecot, dovecot_user, pipelining: bool) -> None:
    messages = [message(i, 2000 + 37 * i) for i in range(300)]
    dovecot.deliver_many(dovecot_user, messages)
    client = await POP3Client.connect(
        dovecot.host, dovecot.pop3_port, tls="none", pipelining=pipelining, window=20
    )
    async with client:
        await client.login(dovecot_user.name, dovecot_user.password, allow_plaintext=True)
        assert client.pipelining is pipelining  # Dovecot advertises PIPELINING
        got = [item async for item in client.retrieve_many(range(1, 301))]
        assert [n for n, _ in got] == list(range(1, 301))
        assert sorted(body for _, body in got) == sorted(messages)
        await client.delete_many(range(1, 151))
        await client.quit()
    assert dovecot.message_count(dovecot_user) == 150


async def test_multi_megabyte_bodies_between_small_ones(dovecot, dovecot_user) -> None:
    """Bodies that arrive over many reads are assembled byte-exact (dot-unstuffed across read
    boundaries), and a one-read body right after one is not mixed into it."""
    messages = [message(1, 3_000_000), message(2), message(3, 1_500_001), message(4, 100)]
    dovecot.deliver_many(dovecot_user, messages)
    client = await POP3Client.connect(dovecot.host, dovecot.pop3_port, tls="none", window=4)
    async with client:
        await client.login(dovecot_user.name, dovecot_user.password, allow_plaintext=True)
        got = [body async for _, body in client.retrieve_many(range(1, 5))]
        assert [type(b) for b in got] == [bytes] * 4
        assert got == messages
        assert await client.retrieve(3) == messages[2]
        await client.quit()


async def test_abort_commits_nothing(dovecot, dovecot_user) -> None:
    dovecot.deliver_many(dovecot_user, [message(1), message(2)])
    client = await POP3Client.connect(dovecot.host, dovecot.pop3_port, tls="none")
    await client.login(dovecot_user.name, dovecot_user.password, allow_plaintext=True)
    await client.delete(1)
    client.abort()
    assert dovecot.message_count(dovecot_user) == 2


async def test_wrong_password(dovecot, dovecot_user) -> None:
    client = await POP3Client.connect(dovecot.host, dovecot.pop3_port, tls="none")
    async with client:
        with pytest.raises(AuthenticationFailed) as info:
            await client.login(dovecot_user.name, "wrong-secret", allow_plaintext=True)
        assert "wrong-secret" not in str(info.value)


async def test_wrong_ca_fails_closed(dovecot, tls_certs) -> None:
    for tls, port in (("implicit", dovecot.pop3s_port), ("starttls", dovecot.pop3_port)):
        with pytest.raises(TLSFailure, match="certificate"):
            await POP3Client.connect(
                dovecot.host, port, tls=tls, ca_file=str(tls_certs.other_ca_file)
            )
    # The explicit switch is the only way around verification.
    client = await POP3Client.connect(dovecot.host, dovecot.pop3s_port, insecure=True)
    client.abort()

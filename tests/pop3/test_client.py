"""`bridge.pop3.client.POP3Client`, directly, against the in-repo fake server: the contract
architecture.md gives it (QUIT as the only commit, abort changes nothing, ordered pipelined
batches, `max_body`, typed errors, `detach`). The real-server side is test_client_dovecot.py;
faults in test_client_faults.py; mechanism choice in test_mechanisms.py."""

from __future__ import annotations

import pytest

from bridge.pop3.client import POP3Client
from bridge.pop3.errors import (
    AuthenticationFailed,
    InsecureAuthRefused,
    LocalProtocolError,
    RemoteProtocolError,
    ResponseError,
)
from bridge.pop3.state import State
from bridge.testing.fakepop3 import FakePOP3Server, Faults

MAIL = [
    b"Subject: one\r\n\r\nfirst body\r\n",
    b"Subject: two\r\n\r\n.a line that starts with a dot\r\n",
    b"Subject: three\r\nX-Long: " + b"y" * 3000 + b"\r\n\r\nthird\r\n",
]


async def connect(fake: FakePOP3Server, **kw: object) -> POP3Client:
    client = await POP3Client.connect(fake.host, fake.port, tls="none", **kw)  # type: ignore[arg-type]
    await client.login("user", "password", allow_plaintext=True)
    return client


async def test_listing_and_fetching_return_what_the_server_holds() -> None:
    async with FakePOP3Server(list(MAIL)) as fake:
        client = await connect(fake)
        async with client:
            assert client.state is State.TRANSACTION
            assert await client.stat() == (3, sum(len(m) for m in MAIL))
            assert [n for n, _ in await client.list()] == [1, 2, 3]
            uidls = await client.uidl()
            assert [n for n, _ in uidls] == [1, 2, 3] and len({u for _, u in uidls}) == 3
            # Dot-stuffing undone, the message exactly as stored.
            assert await client.retrieve(2) == MAIL[1]
            assert (await client.top(3, 0)).startswith(b"Subject: three\r\nX-Long: ")


async def test_batches_come_back_in_the_order_asked() -> None:
    async with FakePOP3Server(list(MAIL)) as fake, await connect(fake) as client:
        got = [(n, raw) async for n, raw in client.retrieve_many([3, 1, 2])]
        assert got == [(3, MAIL[2]), (1, MAIL[0]), (2, MAIL[1])]
        heads = [(n, h) async for n, h in client.top_many([2, 3], 0)]
        assert [n for n, _ in heads] == [2, 3]
        # TOP n 0: the header block and the blank line that ends it, no body.
        assert heads[0][1] == b"Subject: two\r\n\r\n"
        assert heads[1][1] == MAIL[2][: MAIL[2].index(b"\r\n\r\n") + 4]


async def test_quit_is_the_only_commit() -> None:
    async with FakePOP3Server(list(MAIL)) as fake:
        client = await connect(fake)
        await client.delete_many([1, 3])
        client.abort()  # dropped without QUIT: nothing happens on the server
        assert client.closed
        assert fake.deleted_uidls == []
        client = await connect(fake)
        assert (await client.stat())[0] == 3
        await client.delete(2)
        await client.close(commit=True)  # QUIT commits
        assert len(fake.deleted_uidls) == 1
        assert ("QUIT", ()) in fake.commands_seen


async def test_quit_on_a_dropped_connection_is_an_error_not_a_commit() -> None:
    from bridge.pop3.errors import ConnectionLost

    async with FakePOP3Server(list(MAIL)) as fake:
        client = await connect(fake)
        await client.delete_many([1])
        client.abort()
        # A caller that records deletions after quit() returns must not be told it committed.
        with pytest.raises(ConnectionLost, match="committed nothing"):
            await client.quit()
        assert fake.deleted_uidls == []


async def test_leaving_the_context_without_quit_changes_nothing() -> None:
    async with FakePOP3Server(list(MAIL)) as fake:
        with pytest.raises(RuntimeError):
            async with await connect(fake) as client:
                await client.delete(1)
                raise RuntimeError("the caller failed mid-session")
        assert client.closed and fake.deleted_uidls == []
        assert ("QUIT", ()) not in fake.commands_seen


async def test_an_answer_over_max_body_drops_the_connection() -> None:
    async with FakePOP3Server(list(MAIL)) as fake, await connect(fake, max_body=1000) as client:
        assert await client.retrieve(1) == MAIL[0]  # small enough
        with pytest.raises(RemoteProtocolError):
            await client.retrieve(3)  # 3 KB header: over the cap
        assert client.closed


async def test_errors_are_typed_and_carry_the_status() -> None:
    async with FakePOP3Server(list(MAIL), password="right") as fake:
        client = await POP3Client.connect(fake.host, fake.port, tls="none")
        with pytest.raises(AuthenticationFailed):
            await client.login("user", "wrong", mechanism="user", allow_plaintext=True)
        client.abort()
        client = await POP3Client.connect(fake.host, fake.port, tls="none")
        await client.login("user", "right", mechanism="user", allow_plaintext=True)
        async with client:
            with pytest.raises(ResponseError) as info:
                await client.retrieve(99)
            assert info.value.status.text  # the server's own words, for the user
            assert not client.closed  # an -ERR answer leaves the session usable
            assert await client.retrieve(1) == MAIL[0]


async def test_plaintext_login_needs_consent_on_an_unencrypted_link() -> None:
    async with FakePOP3Server(list(MAIL), password="s3cr3t-pw") as fake:
        client = await POP3Client.connect(fake.host, fake.port, tls="none")
        async with client:
            with pytest.raises(InsecureAuthRefused) as info:
                await client.login("user", "s3cr3t-pw", mechanism="user")
            assert "s3cr3t-pw" not in str(info.value)
            assert not any(verb == "PASS" for verb, _ in fake.commands_seen)


async def test_detach_hands_over_only_between_replies() -> None:
    async with FakePOP3Server(list(MAIL), faults=Faults()) as fake:
        client = await connect(fake)
        io = client.detach()
        assert client.closed
        with pytest.raises(LocalProtocolError):
            client.detach()  # once
        io.write(b"STAT\r\n")
        assert (await io.read()).startswith(b"+OK 3 ")
        assert io.transport is not None
        io.transport.close()

"""The CAPA after login sent with the session's first command (`login(lazy_capa=True)`) and
`stat_uidl`: one write when the server lists PIPELINING (RFC 2449 §6.6), one exchange per
command when it does not, and the same answers and capabilities either way."""

from __future__ import annotations

import pytest

from bridge.pop3.client import POP3Client
from bridge.pop3.errors import ConnectionLost, TemporaryFailure
from bridge.pop3.state import State
from bridge.testing.fakepop3 import FakePOP3Server, FakeSession, Faults
from tests.support.writes import record_writes

MAIL = [b"Subject: one\r\n\r\nfirst\r\n", b"Subject: two\r\n\r\nsecond\r\n"]


async def logged_in(
    host: str, port: int, user: str, password: str
) -> tuple[POP3Client, list[bytes]]:
    """A client after a lazy_capa login, and the list its later writes go to."""
    client = await POP3Client.connect(host, port, tls="none")
    await client.login(user, password, allow_plaintext=True, lazy_capa=True)
    writes = record_writes(client)
    return client, writes


async def test_with_pipelining_capa_stat_and_uidl_go_out_in_one_write() -> None:
    async with FakePOP3Server(list(MAIL), login_delay=30) as fake:
        client, writes = await logged_in(fake.host, fake.port, "user", "password")
        async with client:
            assert client.state is State.TRANSACTION
            (count, size), listing = await client.stat_uidl()
            assert writes == [b"CAPA\r\nSTAT\r\nUIDL\r\n"]
            assert (count, size) == (2, sum(len(m) for m in MAIL))
            assert [n for n, _ in listing] == [1, 2] and all(u for _, u in listing)
            # The CAPA after login was read: no SASL or USER once logged in.
            assert "SASL" not in client.capabilities and "USER" not in client.capabilities
            assert client.login_delay == 30
            assert await client.retrieve(2) == MAIL[1]
            await client.quit()
        verbs = [v for v, _ in fake.commands_seen]
        assert verbs[-5:] == ["CAPA", "STAT", "UIDL", "RETR", "QUIT"]


async def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    async with FakePOP3Server(list(MAIL), faults=Faults(no_pipelining=True)) as fake:
        client, writes = await logged_in(fake.host, fake.port, "user", "password")
        async with client:
            assert not client.pipelining
            (count, _), listing = await client.stat_uidl()
            assert writes == [b"STAT\r\n", b"UIDL\r\n"]  # the CAPA was read during login
            assert count == 2 and [n for n, _ in listing] == [1, 2]
            await client.quit()
        verbs = [v for v, _ in fake.commands_seen]
        assert verbs[-4:] == ["CAPA", "STAT", "UIDL", "QUIT"]


async def test_an_owed_capa_goes_alone_before_quit() -> None:
    # QUIT may not be pipelined (it ends the session): the CAPA gets its own exchange first.
    async with FakePOP3Server(list(MAIL)) as fake:
        client, writes = await logged_in(fake.host, fake.port, "user", "password")
        async with client:
            await client.quit()
        assert writes == [b"CAPA\r\n", b"QUIT\r\n"]
        assert [v for v, _ in fake.commands_seen][-2:] == ["CAPA", "QUIT"]


async def test_an_err_to_a_pipelined_stat_drops_the_connection() -> None:
    # UIDL's reply is still in flight: it must never be read as the answer to a later command.
    async def busy(session: FakeSession, args: tuple[str, ...]) -> None:
        await session.send(b"-ERR [SYS/TEMP] try later\r\n")

    faults = Faults(answer={"STAT": busy})
    async with FakePOP3Server(list(MAIL), faults=faults) as fake:
        client, _ = await logged_in(fake.host, fake.port, "user", "password")
        async with client:
            with pytest.raises(TemporaryFailure, match="STAT refused"):
                await client.stat_uidl()
            assert client.closed
            with pytest.raises(ConnectionLost):
                await client.quit()


@pytest.mark.dovecot
async def test_dovecot_answers_the_pipelined_session(dovecot, dovecot_user) -> None:
    dovecot.deliver_many(dovecot_user, MAIL)
    client, writes = await logged_in(
        dovecot.host, dovecot.pop3_port, dovecot_user.name, dovecot_user.password
    )
    async with client:
        assert "PIPELINING" in client.capabilities
        (count, _), listing = await client.stat_uidl()
        assert writes == [b"CAPA\r\nSTAT\r\nUIDL\r\n"]
        assert count == 2 and [n for n, _ in listing] == [1, 2]
        assert "STLS" not in client.capabilities  # Dovecot's list after login
        assert [m async for _, m in client.retrieve_many([1, 2])] == MAIL
        await client.quit()

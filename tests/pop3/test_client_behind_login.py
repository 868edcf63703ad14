"""`login(ahead=STAT_UIDL)`: the CAPA after login, STAT and UIDL in the same write as the login's
last line when the server pipelines (RFC 2449 §6.6), the same answers as without, a refused
login that leaves the connection usable, and servers that lose what follows the login."""

from __future__ import annotations

import asyncio

import pytest

from bridge.pop3.client import STAT_UIDL, CapaMemo, POP3Client
from bridge.pop3.errors import AuthenticationFailed, ConnectionLost
from bridge.pop3.state import State
from bridge.testing.fakepop3 import FakePOP3Server, FakeSession, Faults
from bridge.testing.samples import generate_messages
from tests.support.writes import record_writes

MAIL = generate_messages(3, seed=17)


async def session(
    host: str,
    port: int,
    user: str,
    password: str,
    *,
    mechanism: str = "auto",
    ahead: bool = True,
    memo: CapaMemo | None = None,
    read_timeout: float = 10.0,
) -> tuple[list[bytes], list[tuple[int, str]], int]:
    """One idle poll's session: (what was written after the greeting, UIDL listing, STAT)."""
    client = await POP3Client.connect(
        host, port, tls="none", capa_memo=memo, read_timeout=read_timeout
    )
    writes = record_writes(client)
    async with client:
        await client.login(
            user,
            password,
            mechanism=mechanism,
            allow_plaintext=True,
            lazy_capa=True,
            ahead=STAT_UIDL if ahead else (),
        )
        (count, _), listing = await client.stat_uidl()
        await client.quit(confirm=False)
    return writes, listing, count


def verbs(server: FakePOP3Server, connection: int = 0) -> list[str]:
    return [verb for verb, _ in server.connections[connection].commands]


@pytest.mark.parametrize(
    ("mechanism", "first"),
    [("auto", b"APOP user "), ("user", b"PASS password"), ("plain", b"AUTH PLAIN ")],
)
async def test_the_listing_goes_out_with_the_last_line_and_answers_the_same(
    mechanism: str, first: bytes
) -> None:
    async with FakePOP3Server(list(MAIL)) as fake:
        writes, listing, count = await session(
            fake.host, fake.port, "user", "password", mechanism=mechanism
        )
        plain_writes, plain_listing, plain_count = await session(
            fake.host, fake.port, "user", "password", mechanism=mechanism, ahead=False
        )
    assert writes[-2].startswith(first) and writes[-2].endswith(b"\r\nCAPA\r\nSTAT\r\nUIDL\r\n")
    assert writes[-1] == b"QUIT\r\n"
    assert len(writes) == len(plain_writes) - 1  # one write, and one round trip, fewer
    assert plain_writes[-2] == b"CAPA\r\nSTAT\r\nUIDL\r\n"
    assert (listing, count) == (plain_listing, plain_count) and count == len(MAIL)
    # (QUIT is not waited for: the fake may see the close first.)
    for connection in (0, 1):
        done = verbs(fake, connection)
        assert done[done.index("CAPA", 1) :][:3] == ["CAPA", "STAT", "UIDL"]


async def test_without_pipelining_nothing_goes_behind_the_login() -> None:
    async with FakePOP3Server(list(MAIL), faults=Faults(no_pipelining=True)) as fake:
        writes, listing, count = await session(fake.host, fake.port, "user", "password")
    assert writes[0].startswith(b"APOP ") and writes[0].count(b"\r\n") == 1
    assert writes[1:] == [b"CAPA\r\n", b"STAT\r\n", b"UIDL\r\n", b"QUIT\r\n"]
    assert count == len(MAIL) and len(listing) == len(MAIL)


async def test_a_refused_login_reads_their_replies_and_the_next_mechanism_goes_on() -> None:
    # APOP refused (GNU mailutils-style): the CAPA, STAT and UIDL behind it are answered in
    # AUTHORIZATION, read and dropped, and PLAIN follows on the same connection.
    faults = Faults(refuse_apop="-ERR Bad login")
    async with FakePOP3Server(list(MAIL), faults=faults) as fake:
        writes, listing, count = await session(fake.host, fake.port, "user", "password")
        assert len(fake.connections) == 1
        assert verbs(fake)[:9] == [
            *("CAPA", "APOP", "CAPA", "STAT", "UIDL"),
            *("AUTH", "CAPA", "STAT", "UIDL"),
        ]
    assert writes[0].startswith(b"APOP ") and writes[1].startswith(b"AUTH PLAIN ")
    assert count == len(MAIL) and len(listing) == len(MAIL)


async def test_a_refusal_that_stands_leaves_the_connection_in_step() -> None:
    async with FakePOP3Server(list(MAIL), faults=Faults(err_on_pass="-ERR [AUTH] no")) as fake:
        client = await POP3Client.connect(fake.host, fake.port, tls="none")
        async with client:
            with pytest.raises(AuthenticationFailed, match=r"refused by 127\.0\.0\.1: no"):
                await client.login(
                    "user", "password", allow_plaintext=True, lazy_capa=True, ahead=STAT_UIDL
                )
            assert not client.closed and client.state is State.AUTHORIZATION
            assert "SASL" in await client.capa()  # the next reply is CAPA's: nothing left over
    assert verbs(fake)[:5] == ["CAPA", "APOP", "CAPA", "STAT", "UIDL"]


async def test_a_server_that_loses_what_follows_the_login_gets_it_no_more() -> None:
    async def lost(session: FakeSession, args: tuple[str, ...]) -> None:
        if session.info.authenticated_as is None:
            await session.dispatch("CAPA", args)
        # After the login: as if the input behind the login's line never reached this process.

    async def silent(session: FakeSession, args: tuple[str, ...]) -> None:
        pass

    memo = CapaMemo()
    async with FakePOP3Server(list(MAIL)) as fake:
        fake.queue_faults(Faults(answer={"CAPA": lost, "STAT": silent, "UIDL": silent}))
        with pytest.raises(ConnectionLost):
            await session(fake.host, fake.port, "user", "password", memo=memo, read_timeout=0.5)
        assert not memo.behind_login
        writes, _, count = await session(fake.host, fake.port, "user", "password", memo=memo)
    assert writes[0].startswith(b"APOP ") and writes[0].count(b"\r\n") == 1
    assert writes[1:] == [b"CAPA\r\nSTAT\r\nUIDL\r\n", b"QUIT\r\n"]
    assert count == len(MAIL)


async def test_a_challenge_after_the_last_line_drops_the_connection() -> None:
    # The server wants more than PLAIN's one line: it read CAPA as the answer. Nothing can be
    # matched up after that; the account stops sending commands behind its login.
    async def greedy(session: FakeSession, args: tuple[str, ...]) -> None:
        await session.send(b"+ \r\n")
        await session.reader.readuntil(b"\n")
        await session.send(b"-ERR [AUTH] malformed\r\n")

    memo = CapaMemo()
    async with FakePOP3Server(list(MAIL), faults=Faults(answer={"AUTH": greedy})) as fake:
        client = await POP3Client.connect(fake.host, fake.port, tls="none", capa_memo=memo)
        async with client:
            with pytest.raises(Exception, match="challenge after the last answer"):
                await client.login(
                    "user",
                    "password",
                    mechanism="plain",
                    lazy_capa=True,
                    ahead=STAT_UIDL,
                    allow_plaintext=True,
                )
            assert client.closed
        await asyncio.sleep(0)
    assert not memo.behind_login


@pytest.mark.dovecot
async def test_dovecot_cram_md5_with_the_listing_behind_its_answer(dovecot, dovecot_user) -> None:
    dovecot.deliver_many(dovecot_user, list(MAIL))
    host, port = dovecot.host, dovecot.pop3_port
    name, password = dovecot_user.name, dovecot_user.password
    # auto on a plain link without allow_plaintext... is CRAM-MD5 (session() allows plaintext,
    # which prefers nothing that sends the password: CRAM-MD5 still comes first).
    writes, listing, count = await session(host, port, name, password)
    plain_writes, plain_listing, _ = await session(host, port, name, password, ahead=False)
    assert writes[0] == b"AUTH CRAM-MD5\r\n"
    assert writes[1].endswith(b"\r\nCAPA\r\nSTAT\r\nUIDL\r\n") and writes[1].count(b"\r\n") == 4
    assert writes[2:] == [b"QUIT\r\n"]
    assert len(plain_writes) == len(writes) + 1
    assert count == len(MAIL) and listing == plain_listing and len(listing) == len(MAIL)

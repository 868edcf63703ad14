"""`CapaMemo`: the CAPA before login taken from the account's previous connection, asked again
when it proves wrong, never for STLS, never across encryption (RFC 2449 §5, RFC 2595 §4)."""

from __future__ import annotations

import pytest

from bridge.pop3.client import CapaMemo, POP3Client
from bridge.pop3.errors import AuthenticationFailed, InsecureAuthRefused, TLSFailure
from bridge.testing.fakepop3 import FakePOP3Server, Faults
from bridge.testing.samples import generate_messages
from tests.support.certs import TestCerts

MAIL = generate_messages(2, seed=41)


def verbs(server: FakePOP3Server, connection: int) -> list[str]:
    return [verb for verb, _ in server.connections[connection].commands]


async def session(
    server: FakePOP3Server, memo: CapaMemo, *, mechanism: str = "auto", **connect: object
) -> list[tuple[int, str]]:
    client = await POP3Client.connect(
        server.host,
        server.port,
        tls="none",
        capa_memo=memo,
        **connect,  # type: ignore[arg-type]
    )
    async with client:
        await client.login(
            server.user,
            "pw",
            mechanism=mechanism,
            allow_plaintext=True,
            lazy_capa=True,
        )
        _, listing = await client.stat_uidl()
        await client.quit()
    return listing


async def test_the_second_connection_skips_the_capa_before_login() -> None:
    async with FakePOP3Server(list(MAIL), user="u", password="pw") as server:
        memo = CapaMemo()
        first = await session(server, memo)
        assert memo.caps is not None and "PIPELINING" in memo.caps and not memo.encrypted
        second = await session(server, memo)
        assert first == second and len(second) == 2
    assert verbs(server, 0)[0] == "CAPA"
    # Straight to the login; the CAPA after login still rides with STAT and UIDL.
    assert verbs(server, 1) == ["APOP", "CAPA", "STAT", "UIDL", "QUIT"]


async def test_a_server_without_capa_is_asked_every_time() -> None:
    async with FakePOP3Server(
        list(MAIL), user="u", password="pw", faults=Faults(no_capa=True)
    ) as server:
        memo = CapaMemo()
        await session(server, memo)
        assert memo.caps is None
        await session(server, memo)
    assert verbs(server, 1)[0] == "CAPA"


async def test_pipelining_gone_after_login_makes_the_next_connection_ask() -> None:
    async with FakePOP3Server(list(MAIL), user="u", password="pw") as server:
        memo = CapaMemo()
        await session(server, memo)
        # The server stops pipelining: this session assumed it (the fake still answers in
        # order), its CAPA after login shows it gone, so the memo is dropped ...
        server.queue_faults(Faults(no_pipelining=True))
        assert len(await session(server, memo)) == 2
        assert memo.caps is None
        # ... and the next session asks before login, then waits for each reply; the one
        # after that uses the new list (a server that never pipelines keeps its memo).
        server.faults = Faults(no_pipelining=True)
        for _ in range(2):
            assert len(await session(server, memo)) == 2
            assert memo.caps is not None and "PIPELINING" not in memo.caps
    assert verbs(server, 2) == ["CAPA", "APOP", "CAPA", "STAT", "UIDL", "QUIT"]
    assert verbs(server, 3) == ["APOP", "CAPA", "STAT", "UIDL", "QUIT"]


async def test_a_refused_login_on_a_stale_list_asks_capa_and_logs_in_from_the_new_one() -> None:
    async with FakePOP3Server(list(MAIL), user="u", password="pw") as server:
        memo = CapaMemo()
        await session(server, memo)
        # Now APOP is refused and SASL is gone: the memo still offers PLAIN, which is tried
        # and refused as unknown; the fresh CAPA shows why, and USER/PASS (still offered,
        # a secret not yet refused by a mechanism the server offers) logs in.
        server.queue_faults(Faults(no_sasl=True, refuse_apop="-ERR Bad login"))
        assert len(await session(server, memo)) == 2
        assert server.connections[1].authenticated_as == "u"
        assert memo.caps is None  # a login that needed a retry drops the memo
        await session(server, memo)
    assert verbs(server, 1) == [
        "APOP",
        "AUTH",
        "CAPA",
        "USER",
        "PASS",
        "CAPA",
        "STAT",
        "UIDL",
        "QUIT",
    ]
    assert verbs(server, 2)[0] == "CAPA"


async def test_a_forced_mechanism_the_server_dropped_fails_once_with_its_offer() -> None:
    async with FakePOP3Server(list(MAIL), user="u", password="pw") as server:
        memo = CapaMemo()
        await session(server, memo, mechanism="PLAIN")
        server.queue_faults(Faults(no_sasl=True))
        with pytest.raises(AuthenticationFailed, match="does not offer PLAIN"):
            await session(server, memo, mechanism="PLAIN")
        assert memo.caps is None
    assert verbs(server, 1) == ["AUTH", "CAPA"]


async def test_a_wrong_password_stays_refused_and_the_memo_is_dropped() -> None:
    async with FakePOP3Server(list(MAIL), user="u", password="pw") as server:
        memo = CapaMemo()
        await session(server, memo, mechanism="PLAIN")
        server.password = "changed"
        with pytest.raises(AuthenticationFailed):
            await session(server, memo, mechanism="PLAIN")
        assert memo.caps is None
    # The same list came back: one AUTH, no second try.
    assert verbs(server, 1) == ["AUTH", "CAPA"]


async def test_the_memo_never_allows_a_plaintext_mechanism_on_a_plain_link() -> None:
    async with FakePOP3Server(list(MAIL), user="u", password="pw") as server:
        memo = CapaMemo()
        await session(server, memo, mechanism="PLAIN")
        client = await POP3Client.connect(server.host, server.port, tls="none", capa_memo=memo)
        async with client:
            with pytest.raises(InsecureAuthRefused):
                await client.login("u", "pw", mechanism="PLAIN")


async def test_stls_is_always_asked_and_a_plaintext_memo_is_not_used_under_tls(
    tls_certs: TestCerts,
) -> None:
    async with FakePOP3Server(
        list(MAIL), user="u", password="pw", ssl_context=tls_certs.server_context()
    ) as server:
        memo = CapaMemo()
        await session(server, memo)  # plain: recorded as not encrypted
        assert memo.caps is not None and "STLS" in memo.caps and not memo.encrypted

        async def over_stls() -> POP3Client:
            return await POP3Client.connect(
                server.host,
                server.port,
                tls="starttls",
                ssl_context=tls_certs.client_context(),
                capa_memo=memo,
            )

        for _ in range(2):
            client = await over_stls()
            async with client:
                await client.login("u", "pw", lazy_capa=True)
                await client.quit()
            assert memo.encrypted and "STLS" not in (memo.caps or {})
        # STLS stripped (a downgrade): the encrypted memo cannot stand in for it.
        server.queue_faults(Faults(strip_stls=True))
        with pytest.raises(TLSFailure):
            await over_stls()
    # The plaintext memo was not used after STLS; the encrypted one was, after CAPA and STLS.
    assert verbs(server, 1)[:3] == ["CAPA", "STLS", "CAPA"]
    assert verbs(server, 2)[:3] == ["CAPA", "STLS", "AUTH"]
    assert verbs(server, 3) == ["CAPA"]

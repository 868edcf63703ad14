"""`auth: auto` falls back when a mechanism is refused (issue 12 item 12).

The server is the in-repo fake behaving like GNU mailutils pop3d (and solid-pop3d): a
timestamp in every greeting, APOP refused ("-ERR Bad login") for a user without an APOP
secret, USER/PASS accepted. Dovecot cannot be made to do that. Tested on the client, through
the poller and through the proxy's routing.
"""

from __future__ import annotations

import logging
import poplib
import time

import pytest

from bridge.config import ProxyConfig
from bridge.poller.poll import connect_and_login, poll_account
from bridge.pop3.client import POP3Client, login_with_fallback
from bridge.pop3.errors import AuthenticationFailed
from bridge.store import Store
from bridge.testing.fakepop3 import FakePOP3Server, Faults
from bridge.testing.samples import generate_messages
from tests.proxy.support import in_thread, running_proxy
from tests.support.accounts import fake_account

MAILUTILS = Faults(refuse_apop="-ERR Bad login", no_sasl=True)
HANGS_UP = Faults(refuse_apop="-ERR Bad login", no_sasl=True, hang_up_on_refused_login=True)


def logins(server: FakePOP3Server) -> list[str]:
    return [verb for verb, _ in server.commands_seen if verb in ("APOP", "USER", "PASS", "AUTH")]


async def connect(server: FakePOP3Server) -> POP3Client:
    return await POP3Client.connect("127.0.0.1", server.port, tls="none", read_timeout=10)


async def test_apop_refused_falls_back_to_user_on_the_same_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FakePOP3Server([], user="u", password="pw", faults=MAILUTILS) as server:
        client = await connect(server)
        assert client.greeting.timestamp is not None  # APOP is "offered"
        with caplog.at_level(logging.INFO, logger="bridge.pop3.client"):
            await client.login("u", "pw", allow_plaintext=True)
        assert client.mechanism == "USER"
        await client.quit()
    assert logins(server) == ["APOP", "USER", "PASS"]
    assert len(server.connections) == 1
    assert "with USER after APOP was refused" in caplog.text


async def test_never_falls_back_to_plaintext_unless_allowed() -> None:
    async with FakePOP3Server([], user="u", password="pw", faults=MAILUTILS) as server:
        client = await connect(server)
        with pytest.raises(AuthenticationFailed, match="APOP refused") as info:
            await client.login("u", "pw")  # a plain link, allow_plaintext off
        client.abort()
    assert logins(server) == ["APOP"]  # the password never went out in the clear
    assert info.value.tried == ("APOP",) and info.value.untried == ()


async def test_a_server_that_hangs_up_is_dialled_again_for_the_next_mechanism() -> None:
    async with FakePOP3Server([], user="u", password="pw", faults=HANGS_UP) as server:
        client = await login_with_fallback(lambda: connect(server), "u", "pw", allow_plaintext=True)
        assert client.mechanism == "USER"
        await client.quit()
    assert [c.commands[0][0] for c in server.connections] == ["CAPA", "CAPA"]
    first, second = ([v for v, _ in c.commands if v != "CAPA"] for c in server.connections)
    assert first == ["APOP"] and second[:2] == ["USER", "PASS"]  # APOP not tried again


async def test_a_forced_mechanism_does_not_fall_back() -> None:
    async with FakePOP3Server([], user="u", password="pw", faults=MAILUTILS) as server:
        with pytest.raises(AuthenticationFailed, match="APOP refused"):
            await login_with_fallback(lambda: connect(server), "u", "pw", mechanism="apop")
    assert logins(server) == ["APOP"]


async def test_a_wrong_password_is_one_attempt_per_kind_of_secret() -> None:
    async with FakePOP3Server([], user="u", password="pw") as server:  # SASL PLAIN LOGIN too
        client = await connect(server)
        with pytest.raises(AuthenticationFailed):
            await client.login("u", "wrong", allow_plaintext=True)
        client.abort()
    # APOP (its digest), then the password once: not again as LOGIN and USER.
    assert logins(server) == ["APOP", "AUTH"]


@pytest.mark.parametrize("faults", [MAILUTILS, HANGS_UP], ids=["same-connection", "hangs-up"])
async def test_the_poller_logs_in_to_a_mailutils_like_server(
    store: Store, faults: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    box = generate_messages(3, seed=121)
    async with FakePOP3Server(box, user="u", password="pw", faults=faults) as server:
        with caplog.at_level(logging.INFO):
            report = await poll_account(
                fake_account(server, "mailutils", connect_timeout=30.0), store
            )
        assert report.recorded == 3
        assert len(await store.claim_due(time.time() + 1, 100, "t", 60)) == 3
        # Without allow_plaintext the password is never sent in the clear: the poll fails.
        with pytest.raises(AuthenticationFailed, match="APOP refused"):
            await connect_and_login(
                fake_account(server, "mailutils", connect_timeout=30.0, allow_plaintext=False)
            )
    assert "with USER after APOP was refused" in caplog.text


async def test_the_proxy_routes_to_a_mailutils_like_server() -> None:
    mail = generate_messages(2, seed=122)
    async with FakePOP3Server(list(mail), user="carol", password="pw", faults=MAILUTILS) as fake:
        upstream = {"host": "127.0.0.1", "port": fake.port, "tls": "none"}
        config = {
            "listeners": [{"name": "plain", "port": 0}],
            "routes": [
                {"match": "carol", "upstream": upstream},
                {"match": "*", "upstream": {**upstream, "auth": "user"}},
            ],
        }
        async with running_proxy(config) as proxy:
            host, port = proxy.addresses["plain"]

            def stat(user: str) -> tuple[int, int]:
                conn = poplib.POP3(host, port, timeout=10)
                try:
                    conn.user(user)
                    conn.pass_("pw")
                    return conn.stat()
                finally:
                    conn.close()

            # `auth: auto` (the default): APOP refused upstream, then USER/PASS.
            assert (await in_thread(stat, "carol"))[0] == 2
            assert logins(fake) == ["APOP", "USER", "PASS"]
            # `auth: user` on the route: APOP is never tried.
            fake.commands_seen.clear()
            fake.user = "dave"
            assert (await in_thread(stat, "dave"))[0] == 2
            assert logins(fake) == ["USER", "PASS"]


def test_routes_upstream_auth_key_is_validated() -> None:
    base = {"listeners": [{"name": "p", "port": 0}]}
    route = {"match": "*", "upstream": {"host": "h", "tls": "none", "auth": "apop"}}
    assert ProxyConfig.model_validate({**base, "routes": [route]}).routes[0].upstream.auth == "apop"
    with pytest.raises(ValueError, match="auth"):
        bad = {**route, "upstream": {"host": "h", "auth": "xoauth2"}}
        ProxyConfig.model_validate({**base, "routes": [bad]})

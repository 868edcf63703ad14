"""The proxy in front of a real Dovecot: real clients get through it what they get directly."""

from __future__ import annotations

import poplib

import pytest

from bridge.config import ProxyUpstream
from bridge.proxy.session import connect_upstream
from bridge.testing.fakepop3 import FakePOP3Server
from bridge.testing.samples import generate_messages
from tests.proxy.support import fetch_all, fixed_config, in_thread, running_proxy
from tests.support.wait import wait_until

pytestmark = pytest.mark.dovecot


async def test_poplib_through_fixed_upstream_matches_direct(dovecot, dovecot_user) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(3))
    direct = await in_thread(
        fetch_all, dovecot.host, dovecot.pop3_port, dovecot_user.name, dovecot_user.password
    )
    async with running_proxy(fixed_config(dovecot)) as proxy:
        host, port = proxy.addresses["plain"]
        through = await in_thread(fetch_all, host, port, dovecot_user.name, dovecot_user.password)
    assert through == direct
    assert len(direct["messages"]) == 3


async def test_stls_to_client_with_plain_upstream(dovecot, dovecot_user, tls_certs) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=1))
    direct = await in_thread(
        fetch_all, dovecot.host, dovecot.pop3_port, dovecot_user.name, dovecot_user.password
    )
    listener = {
        "starttls": True,
        "cert_file": str(tls_certs.cert_file),
        "key_file": str(tls_certs.key_file),
    }
    config = fixed_config(dovecot, listener=listener, policy={"require_tls": True})
    async with running_proxy(config) as proxy:
        host, port = proxy.addresses["plain"]
        ctx = tls_certs.client_context()
        through = await in_thread(
            fetch_all, "localhost", port, dovecot_user.name, dovecot_user.password, stls=ctx
        )
        # Without STLS the credentials are refused before they leave the client's link.
        with pytest.raises(poplib.error_proto, match="TLS"):
            await in_thread(fetch_all, host, port, dovecot_user.name, dovecot_user.password)
    assert through == direct


async def test_implicit_tls_upstream_and_pop3s_listener(dovecot, dovecot_user, tls_certs) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=2))
    direct = await in_thread(
        fetch_all, dovecot.host, dovecot.pop3_port, dovecot_user.name, dovecot_user.password
    )
    pop3s = {
        "name": "pop3s",
        "port": 0,
        "tls": "implicit",
        "cert_file": str(tls_certs.cert_file),
        "key_file": str(tls_certs.key_file),
    }
    config = fixed_config(dovecot, upstream_tls="implicit", more_listeners=[pop3s])
    config["upstream"]["host"] = "localhost"  # the name in Dovecot's certificate
    async with running_proxy(config) as proxy:
        _, plain_port = proxy.addresses["plain"]
        _, tls_port = proxy.addresses["pop3s"]
        plain = await in_thread(
            fetch_all, "127.0.0.1", plain_port, dovecot_user.name, dovecot_user.password
        )
        wrapped = await in_thread(
            fetch_all,
            "localhost",
            tls_port,
            dovecot_user.name,
            dovecot_user.password,
            pop3s=tls_certs.client_context(),
        )
    assert plain == direct and wrapped == direct


async def test_upstream_certificate_is_verified(dovecot, dovecot_user, tls_certs) -> None:
    config = fixed_config(dovecot, upstream_tls="implicit")
    config["upstream"]["host"] = "localhost"
    config["upstream"]["ca_file"] = str(tls_certs.other_ca_file)
    async with running_proxy(config) as proxy:
        _, port = proxy.addresses["plain"]
        with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
            await in_thread(fetch_all, "127.0.0.1", port, dovecot_user.name, dovecot_user.password)


async def test_apop_end_to_end_through_fixed_upstream(dovecot, dovecot_user) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=3))
    direct = await in_thread(
        fetch_all, dovecot.host, dovecot.pop3_port, dovecot_user.name, dovecot_user.password
    )
    async with running_proxy(fixed_config(dovecot)) as proxy:
        host, port = proxy.addresses["plain"]
        through = await in_thread(
            fetch_all, host, port, dovecot_user.name, dovecot_user.password, apop=True
        )
    assert through == direct


async def test_dele_denied_and_message_still_there(dovecot, dovecot_user) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=4))
    async with running_proxy(fixed_config(dovecot, policy={"read_only": True})) as proxy:
        host, port = proxy.addresses["plain"]

        def delete_all() -> tuple[bytes, bytes, list[bytes]]:
            conn = poplib.POP3(host, port, timeout=20)
            capa = conn.capa()
            conn.user(dovecot_user.name)
            conn.pass_(dovecot_user.password)
            with pytest.raises(poplib.error_proto) as refused:
                conn.dele(1)
            # Pipelined: the refused DELE is answered in its place between two relayed replies.
            conn.sock.sendall(b"STAT\r\nDELE 2\r\nNOOP\r\n")
            replies = [conn._getline()[0] for _ in range(3)]
            quit_reply = conn.quit()
            return str(refused.value).encode(), quit_reply, [*replies, repr(capa).encode()]

        refused, quit_reply, replies = await in_thread(delete_all)
    assert b"not allowed" in refused and quit_reply.startswith(b"+OK")
    assert (
        replies[0].startswith(b"+OK 2 ") and replies[1].startswith(b"-ERR") and replies[2] == b"+OK"
    )
    assert dovecot.message_count(dovecot_user) == 2


async def test_routing_two_users_to_two_upstreams(dovecot, dovecot_user) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=5))
    mail = generate_messages(1, seed=6)
    async with FakePOP3Server(list(mail), user="carol", password="fake-pass-42") as fake:
        config = {
            "listeners": [{"name": "plain", "port": 0}],
            "log_commands": True,
            "routes": [
                {
                    "match": "*@example.com",
                    "rewrite_user": "{local}",
                    "upstream": {"host": "127.0.0.1", "port": fake.port, "tls": "none"},
                },
                {
                    "match": "*",
                    "upstream": {"host": dovecot.host, "port": dovecot.pop3_port, "tls": "none"},
                },
            ],
        }
        async with running_proxy(config) as proxy:
            host, port = proxy.addresses["plain"]
            bob = await in_thread(fetch_all, host, port, dovecot_user.name, dovecot_user.password)
            carol = await in_thread(fetch_all, host, port, "carol@example.com", "fake-pass-42")
            with pytest.raises(poplib.error_proto, match=r"-ERR"):
                await in_thread(fetch_all, host, port, "carol@example.com", "wrong")
            with pytest.raises(poplib.error_proto, match="APOP"):
                await in_thread(fetch_all, host, port, "carol@example.com", "x", apop=True)
    assert bob["stat"][0] == 2 and carol["messages"] == [m.rstrip(b"\r\n") for m in mail]
    # The rewritten name went upstream (the proxy picks its own mechanism there: APOP here).
    logins = [args for verb, args in fake.commands_seen if verb in ("USER", "APOP")]
    assert logins and all(args[0] == "carol" for args in logins)


async def test_per_user_limit_refuses_a_second_login_and_frees_on_close(
    dovecot, dovecot_user
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=17))
    config = fixed_config(dovecot, policy={"max_connections_per_user": 1})
    async with running_proxy(config) as proxy:
        host, port = proxy.addresses["plain"]

        def login() -> poplib.POP3:
            conn = poplib.POP3(host, port, timeout=10)
            conn.user(dovecot_user.name)
            conn.pass_(dovecot_user.password)
            return conn

        first = await in_thread(login)
        with pytest.raises(poplib.error_proto, match=r"IN-USE"):
            await in_thread(login)
        # The first session is untouched: it still sees its mailbox.
        assert (await in_thread(first.stat))[0] == 2
        await in_thread(first.quit)
        await wait_until(lambda: proxy.session_count == 0)  # its slot is given back
        again = await in_thread(login)
        await in_thread(again.quit)


async def test_per_user_limit_comes_from_the_users_route(dovecot, dovecot_user) -> None:
    """Routes carry their own policy: the user's route sets the per-user limit, and a route
    without a policy inherits the top-level one."""
    plain = {"host": dovecot.host, "port": dovecot.pop3_port, "tls": "none"}
    config = {
        "listeners": [{"name": "plain", "port": 0}],
        "policy": {"max_connections_per_user": 1},
        "routes": [
            {
                "match": dovecot_user.name,
                "upstream": plain,
                "policy": {"max_connections_per_user": 2},
            },
            {"match": "*", "upstream": plain},
        ],
    }
    other = dovecot.add_user()
    async with running_proxy(config) as proxy:
        host, port = proxy.addresses["plain"]

        def login(name: str, password: str) -> poplib.POP3:
            conn = poplib.POP3(host, port, timeout=10)
            conn.user(name)
            conn.pass_(password)
            return conn

        mine = [await in_thread(login, dovecot_user.name, dovecot_user.password) for _ in "ab"]
        with pytest.raises(poplib.error_proto, match=r"IN-USE"):
            await in_thread(login, dovecot_user.name, dovecot_user.password)
        theirs = await in_thread(login, other.name, other.password)
        with pytest.raises(poplib.error_proto, match=r"IN-USE"):
            await in_thread(login, other.name, other.password)
        for conn in [*mine, theirs]:
            await in_thread(conn.quit)


async def test_upstream_legs_share_one_tls_context(dovecot, tls_certs) -> None:
    # Building a context loads the CA store (~22 ms of CPU with the system one): two sessions
    # to the same upstream verify it with the same context, and a different CA gets its own.
    up = ProxyUpstream(host=dovecot.host, port=dovecot.pop3s_port, ca_file=str(tls_certs.ca_file))
    contexts = []
    for _ in range(2):
        client = await connect_upstream(up, 10.0)
        try:
            assert client.encrypted and client.tls_version is not None
            contexts.append(client._ssl_object().context)  # type: ignore[union-attr]
        finally:
            client.abort()
    assert contexts[0] is contexts[1]
    other = ProxyUpstream(host=dovecot.host, port=dovecot.pop3s_port, insecure=True)
    client = await connect_upstream(other, 10.0)
    try:
        assert client._ssl_object().context is not contexts[0]  # type: ignore[union-attr]
    finally:
        client.abort()

"""`bridge.proxy.session.run_session`, directly: one accepted connection driven to its end
against a fake upstream, without the server around it (listeners, limits and the handler are
`bridge.proxy.server`'s; tests/proxy/test_cli.py runs the whole proxy)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from bridge.config import ProxyConfig, ProxyPolicy, ProxyRoute
from bridge.pop3.stream import StreamProtocol
from bridge.proxy.log import SessionLog
from bridge.proxy.policy import Policy, PolicyRules
from bridge.proxy.routing import RoutingTable
from bridge.proxy.session import IDLE_CLOSE, UPSTREAM_DOWN, SessionSettings, run_session
from bridge.testing.fakepop3 import FakePOP3Server

MAIL = [b"Subject: one\r\n\r\nfirst\r\n", b"Subject: two\r\n\r\n.dotted line\r\nsecond\r\n"]


@dataclass
class Harness:
    """A loopback listener whose every connection is one `run_session`."""

    settings: SessionSettings
    idle_timeout: float = 10.0
    ended: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    port: int = 0

    def _accepted(self) -> StreamProtocol:
        def start(proto: StreamProtocol) -> None:
            slog = SessionLog("t-1", "127.0.0.1:1", self.settings.listener, log_commands=False)
            self.tasks.append(asyncio.ensure_future(self._run(proto, slog)))

        return StreamProtocol(None, on_connect=start, half_close=True)

    async def _run(self, proto: StreamProtocol, slog: SessionLog) -> None:
        self.ended.append(
            await run_session(proto, self.settings, slog, idle_timeout=self.idle_timeout)
        )
        self.done.set()

    async def ended_with(self) -> str:
        await asyncio.wait_for(self.done.wait(), 10)
        return self.ended[-1]


@contextlib.asynccontextmanager
async def serving(settings: SessionSettings, idle_timeout: float = 10.0) -> AsyncIterator[Harness]:
    harness = Harness(settings, idle_timeout)
    server = await asyncio.get_running_loop().create_server(harness._accepted, "127.0.0.1", 0)
    harness.port = server.sockets[0].getsockname()[1]
    try:
        yield harness
    finally:
        server.close()
        for task in harness.tasks:
            task.cancel()
        await asyncio.gather(*harness.tasks, return_exceptions=True)


def fixed(port: int, **policy: Any) -> SessionSettings:
    config = ProxyConfig.model_validate(
        {
            "listeners": [{"name": "plain", "port": 0}],
            "upstream": {"host": "127.0.0.1", "port": port, "tls": "none"},
            "policy": policy,
        }
    )
    return SessionSettings(
        listener="plain",
        routes=RoutingTable.fixed(config),
        fixed=True,
        offer_stls=False,
        client_tls=None,
        default_policy=Policy(PolicyRules()),
        log_commands=False,
        connect_timeout=5,
    )


def routing(routes: list[dict[str, Any]]) -> SessionSettings:
    table = RoutingTable([ProxyRoute.model_validate(r) for r in routes], ProxyPolicy())
    return SessionSettings(
        listener="plain",
        routes=table,
        fixed=False,
        offer_stls=False,
        client_tls=None,
        default_policy=Policy(PolicyRules()),
        log_commands=False,
        connect_timeout=5,
    )


async def exchange(port: int, lines: list[bytes], *, quit: bool = True) -> bytes:
    """Send `lines` (pipelined) and read everything until the proxy closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(lines + ([b"QUIT\r\n"] if quit else [])))
    await writer.drain()
    data = b""
    async with asyncio.timeout(10):
        while chunk := await reader.read(65536):
            data += chunk
            if not quit and data.count(b"\r\n") >= len(lines) + 1 and data.endswith(b"\r\n"):
                break
    writer.close()
    return data


async def test_fixed_upstream_session_is_relayed_byte_exact_and_ends_with_quit() -> None:
    async with FakePOP3Server(list(MAIL)) as fake, serving(fixed(fake.port)) as proxy:
        data = await exchange(
            proxy.port, [b"USER user\r\n", b"PASS password\r\n", b"RETR 2\r\n", b"DELE 1\r\n"]
        )
        assert await proxy.ended_with() == "quit"
    # The message comes through dot-stuffed exactly as the server sent it.
    assert b"\r\n..dotted line\r\nsecond\r\n.\r\n" in data
    assert data.count(b"+OK") == 6  # greeting, USER, PASS, RETR, DELE, QUIT
    # The client's own QUIT was relayed, so the DELE is committed upstream.
    assert ("QUIT", ()) in fake.commands_seen
    assert len(fake.deleted_uidls) == 1


async def test_a_client_that_leaves_without_quit_commits_nothing_upstream() -> None:
    async with FakePOP3Server(list(MAIL)) as fake, serving(fixed(fake.port)) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"USER user\r\nPASS password\r\nDELE 1\r\n")
        async with asyncio.timeout(10):
            for _ in range(4):  # greeting, USER, PASS, DELE
                assert (await reader.readline()).startswith(b"+OK")
        writer.close()
        assert await proxy.ended_with() == "client closed the connection"
    assert not [c for c in fake.commands_seen if c[0] == "QUIT"]  # never sent on its behalf
    assert fake.deleted_uidls == []


async def test_upstream_down_is_answered_sys_temp() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        async with serving(fixed(sock.getsockname()[1])) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            async with asyncio.timeout(10):
                assert await reader.read() == UPSTREAM_DOWN
            writer.close()
            assert await proxy.ended_with() == "upstream unavailable"


async def test_idle_client_is_told_and_dropped() -> None:
    async with FakePOP3Server(list(MAIL)) as fake, serving(fixed(fake.port), 0.5) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        async with asyncio.timeout(10):
            assert (await reader.readline()).startswith(b"+OK")  # greeting, then silence
            assert await reader.read() == IDLE_CLOSE
        writer.close()
        assert await proxy.ended_with() == "idle timeout"
    assert not [c for c in fake.commands_seen if c[0] == "QUIT"]


async def test_routing_login_goes_to_the_users_route_under_the_rewritten_name() -> None:
    async with FakePOP3Server(list(MAIL), user="ann") as fake:
        upstream = {"host": "127.0.0.1", "port": fake.port, "tls": "none"}
        settings = routing(
            [{"match": "*@example.org", "upstream": upstream, "rewrite_user": "{local}"}]
        )
        async with serving(settings) as proxy:
            data = await exchange(
                proxy.port, [b"USER ann@example.org\r\n", b"PASS password\r\n", b"STAT\r\n"]
            )
            await proxy.ended_with()
    assert data.startswith(b"+OK POP3 proxy ready\r\n")
    assert b"+OK 2 " in data  # STAT from the upstream mailbox
    # Logged in upstream as the rewritten name (the proxy picks its mechanism there: APOP).
    logins = [args for verb, args in fake.commands_seen if verb in ("USER", "APOP")]
    assert logins and all(args[0] == "ann" for args in logins)


async def test_routing_login_of_an_unknown_user_is_refused_without_an_upstream() -> None:
    settings = routing(
        [{"match": "ann@example.org", "upstream": {"host": "127.0.0.1", "port": 9, "tls": "none"}}]
    )
    async with serving(settings) as proxy:
        data = await exchange(proxy.port, [b"USER bob@example.net\r\n", b"PASS secret\r\n"])
        await proxy.ended_with()
    replies = data.split(b"\r\n")
    assert replies[0] == b"+OK POP3 proxy ready"
    assert any(r.startswith(b"-ERR") for r in replies[1:3])
    assert b"secret" not in data

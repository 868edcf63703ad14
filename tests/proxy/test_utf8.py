"""RFC 6856 UTF8 through the proxy, against a server that offers it (Dovecot's POP3 does not)."""

from __future__ import annotations

import asyncio

from bridge.testing.fakepop3 import FakePOP3Server
from tests.proxy.support import running_proxy


async def test_utf8_offered_by_the_server_is_relayed_and_the_session_goes_on() -> None:
    async with (
        FakePOP3Server([b"Subject: hi\r\n\r\nbody\r\n"], utf8=True) as fake,
        running_proxy(
            {
                "listeners": [{"name": "plain", "port": 0}],
                "upstream": {"host": "127.0.0.1", "port": fake.port, "tls": "none"},
                "policy": {"max_errors": 1},
            }
        ) as proxy,
    ):
        reader, writer = await asyncio.open_connection(*proxy.addresses["plain"])
        async with asyncio.timeout(10):
            assert (await reader.readline()).startswith(b"+OK")
            writer.write(b"CAPA\r\n")
            capa = []
            while (line := await reader.readline()) != b".\r\n":
                capa.append(line)
            assert b"UTF8\r\n" in capa
            writer.write(b"UTF8\r\nUSER user\r\nPASS password\r\nSTAT\r\nQUIT\r\n")
            replies = [await reader.readline() for _ in range(5)]
        writer.close()
    assert replies == [
        b"+OK UTF8 enabled\r\n",
        b"+OK send PASS\r\n",
        b"+OK maildrop has 1 messages\r\n",
        replies[3],
        replies[4],
    ]
    assert replies[3].startswith(b"+OK 1 ") and replies[4].startswith(b"+OK")
    assert ("UTF8", ()) in fake.commands_seen

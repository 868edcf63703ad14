"""The pipelined writer: never more than `window` commands unanswered, and few writes.

A server's input buffer is what the window protects (RFC 2449 section 6.6: a client must not
overrun it); the write count is what made the poller's fetch stage cost a syscall and a task
wake-up per message.
"""

from __future__ import annotations

import pytest

from bridge.pop3.client import POP3Client
from bridge.testing.fakepop3 import FakePOP3Server
from bridge.testing.samples import generate_messages


@pytest.mark.parametrize("window", [1, 3, 50])
async def test_window_bounds_unanswered_commands_and_writes_come_in_bursts(window: int) -> None:
    messages = list(generate_messages(120, seed=5))
    async with FakePOP3Server(messages) as server:
        client = await POP3Client.connect("127.0.0.1", server.port, tls="none")
        await client.login("user", "password", allow_plaintext=True)
        client._window = window
        real_write = client._write
        sent = answered = most_unanswered = writes = 0

        async def counting_write(data: bytes) -> None:
            nonlocal sent, most_unanswered, writes
            writes += 1
            sent += data.count(b"\r\n")
            most_unanswered = max(most_unanswered, sent - answered)
            await real_write(data)

        client._write = counting_write  # type: ignore[method-assign]
        got = []
        async for number, body in client.retrieve_many(range(1, 121)):
            answered += 1
            got.append((number, body))
        client._write = real_write  # type: ignore[method-assign]
        await client.quit()
    assert [n for n, _ in got] == list(range(1, 121))
    assert [b for _, b in got] == messages
    assert sent == 120
    assert most_unanswered <= window
    if window >= 4:
        assert writes <= 1 + 120 // (window // 4)

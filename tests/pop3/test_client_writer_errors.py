"""Regression (found by the soak): when the connection died while a pipelined batch was being
written, the writer task's exception was never retrieved, and asyncio logged "Task exception
was never retrieved" with a traceback at ERROR for every such session."""

from __future__ import annotations

import gc
import logging

import pytest

from bridge.pop3.client import POP3Client
from bridge.pop3.errors import POP3Error
from bridge.testing.fakepop3 import FakePOP3Server
from bridge.testing.samples import generate_messages


async def test_dead_link_during_pipelined_writes_leaves_no_unretrieved_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FakePOP3Server(generate_messages(20, seed=3)) as server:
        client = await POP3Client.connect("127.0.0.1", server.port, tls="none")
        await client.login("user", "password", allow_plaintext=True)
        assert client.pipelining
        client._window = 2  # the writer sends in several bursts of 2 commands
        real_write = client._write
        writes = 0

        async def dying_write(data: bytes) -> None:
            # The link dies while the writer is a few commands ahead of the reader.
            nonlocal writes
            writes += 1
            if writes == 3:
                client.abort()
            await real_write(data)

        client._write = dying_write  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="asyncio"), pytest.raises(POP3Error):
            async for _ in client.retrieve_many(list(range(1, 21))):
                pass
        client.abort()
        gc.collect()  # the finished writer task is freed here; asyncio would log it now
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]

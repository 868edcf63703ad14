"""The credit window of pipelined batches (bridge/pop3/pipeline.py), driven without sockets."""

from __future__ import annotations

import asyncio

import pytest

from bridge.pop3.errors import ConnectionLost, ResponseError
from bridge.pop3.events import Command
from bridge.pop3.pipeline import pipelined


class Wire:
    """A server that answers each command once it was written; records the window."""

    def __init__(self, *, fail_at: int | None = None, write_error_at: int | None = None) -> None:
        self.sent: list[str] = []
        self.answered = 0
        self.most_outstanding = 0
        self.abandoned = 0
        self.fail_at = fail_at
        self.write_error_at = write_error_at
        self.arrived = asyncio.Event()
        self.batches: list[int] = []  # replies handed on per call

    def encode(self, command: Command) -> bytes:
        return f"{command.verb} {command.args[0]}\r\n".encode()

    async def write(self, data: bytes) -> None:
        lines = data.decode().splitlines()
        if self.write_error_at is not None and len(self.sent) + len(lines) > self.write_error_at:
            raise ConnectionLost("connection failed while sending")
        self.sent += lines
        self.most_outstanding = max(self.most_outstanding, len(self.sent) - self.answered)
        self.arrived.set()

    async def replies(self, first: int) -> list[str]:
        """Every reply to what was sent and not yet answered (at least one)."""
        assert first == self.answered
        while len(self.sent) <= self.answered:
            self.arrived.clear()
            await self.arrived.wait()
        got = []
        while self.answered < len(self.sent):
            self.answered += 1
            if self.answered == self.fail_at:
                raise ResponseError(f"{self.sent[self.answered - 1]} refused")
            got.append(self.sent[self.answered - 1])
        self.batches.append(len(got))
        return got

    def abandon(self) -> None:
        self.abandoned += 1

    def run(self, n: int, window: int):  # type: ignore[no-untyped-def]
        commands = [Command("RETR", (str(i),)) for i in range(1, n + 1)]
        return pipelined(
            commands,
            window=window,
            encode=self.encode,
            write=self.write,
            replies=self.replies,
            abandon=self.abandon,
        )


async def test_a_finished_batch_answers_in_order_within_the_window_and_is_not_abandoned() -> None:
    wire = Wire()
    got = [line async for lines in wire.run(200, window=20) for line in lines]
    assert got == [f"RETR {i}" for i in range(1, 201)]
    assert 1 < wire.most_outstanding <= 20
    assert wire.abandoned == 0
    # Replies that arrived together were handed on together, and gave their credit back.
    assert max(wire.batches) > 1 and sum(wire.batches) == 200


async def test_a_caller_that_stops_early_abandons_the_connection() -> None:
    wire = Wire()
    replies = wire.run(50, window=8)
    async for lines in replies:
        if "RETR 3" in lines:
            break
    await replies.aclose()
    assert wire.abandoned == 1


async def test_an_err_ends_the_batch_and_abandons() -> None:
    wire = Wire(fail_at=4)
    with pytest.raises(ResponseError, match="refused"):
        async for _ in wire.run(10, window=4):
            pass
    assert wire.abandoned == 1


async def test_the_writers_error_reaches_the_reader() -> None:
    wire = Wire(write_error_at=5)
    with pytest.raises(ConnectionLost, match="while sending"):
        async for _ in wire.run(10, window=2):
            await asyncio.sleep(0)
    assert wire.abandoned == 1

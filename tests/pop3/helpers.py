"""Feeding helpers: every framing case runs whole, one byte at a time and in random chunks."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Protocol

from bridge.pop3.connection import ClientConnection
from bridge.pop3.events import Command, NeedData
from bridge.pop3.state import State


class Feedable(Protocol):
    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> object: ...


def chunkings(data: bytes, seed: int = 0) -> Iterator[list[bytes]]:
    """Whole, byte by byte, and three random splittings of `data`."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    rnd = random.Random(seed)
    for _ in range(3):
        parts, i = [], 0
        while i < len(data):
            step = rnd.randint(1, 7)
            parts.append(data[i : i + step])
            i += step
        yield parts


def feed(target: Feedable, parts: list[bytes], *, eof: bool = False) -> list[object]:
    events: list[object] = []
    for part in [*parts, b""] if eof else parts:
        target.receive_data(part)
        while not isinstance(event := target.next_event(), NeedData):
            events.append(event)
            if type(event).__name__ == "ConnectionClosed":
                return events
    return events


def logged_in() -> ClientConnection:
    """A client connection past the greeting and USER/PASS, in the TRANSACTION state."""
    c = ClientConnection()
    feed(c, [b"+OK hi\r\n"])
    c.send(Command("USER", ("u",)))
    feed(c, [b"+OK\r\n"])
    c.send(Command("PASS", ("p",)))
    feed(c, [b"+OK\r\n"])
    assert c.state is State.TRANSACTION
    return c


def merge_chunks(events: list[object]) -> list[object]:
    """Join consecutive DataChunks so results compare equal whatever the chunking was."""
    from bridge.pop3.events import DataChunk

    out: list[object] = []
    for event in events:
        if isinstance(event, DataChunk) and out and isinstance(out[-1], DataChunk):
            prev = out[-1]
            out[-1] = DataChunk(prev.data + event.data, prev.raw + event.raw)
        else:
            out.append(event)
    return out

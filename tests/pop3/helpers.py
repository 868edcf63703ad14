"""Feeding helpers: every framing case runs whole, one byte at a time and in random chunks."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Protocol

from bridge.pop3.events import NeedData


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

"""Hypothesis properties: stuffing round-trips, and the framers only raise their own errors."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.pop3.commands import ResponseKind
from bridge.pop3.errors import POP3Error
from bridge.pop3.events import DataChunk, EndOfMultiline, NeedData
from bridge.pop3.wire import CommandReader, ResponseFramer, dot_stuff, dot_unstuff

# Bytes rich in the characters that matter for framing.
framing_bytes = st.lists(
    st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"\r\n.", b"+OK", b"-ERR", b" ", b"x", b"\x00"]),
    max_size=40,
).map(b"".join)
any_bytes = st.one_of(st.binary(max_size=300), framing_bytes)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@settings(max_examples=300, deadline=None)
@given(any_bytes)
def test_stuff_unstuff_round_trip(message: bytes) -> None:
    expected = message if not message or message.endswith(b"\r\n") else message + b"\r\n"
    assert dot_unstuff(dot_stuff(message)) == expected


@settings(max_examples=300, deadline=None)
@given(any_bytes, st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_framer_recovers_message_in_any_chunking(message: bytes, cuts: list[int]) -> None:
    wire = b"+OK hi\r\n+OK\r\n" + dot_stuff(message)
    framer = ResponseFramer()
    framer.expect(ResponseKind.MULTI)
    data, ended = b"", False
    for part in split(wire, cuts):
        framer.receive_data(part)
        while not isinstance(event := framer.next_event(), NeedData):
            if isinstance(event, DataChunk):
                data += event.data
            ended = ended or isinstance(event, EndOfMultiline)
    expected = message if not message or message.endswith(b"\r\n") else message + b"\r\n"
    assert ended and data == expected


def drain(target: ResponseFramer | CommandReader, parts: list[bytes]) -> None:
    for part in [*parts, b""]:
        target.receive_data(part)
        for _ in range(10_000):
            try:
                event = target.next_event()
            except POP3Error:
                if isinstance(target, ResponseFramer):
                    return  # the framer has no way to resync; its own error is the outcome
                continue
            if isinstance(event, NeedData) or type(event).__name__ == "ConnectionClosed":
                break


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=400) | framing_bytes,
    st.lists(st.sampled_from(list(ResponseKind)[:3]), max_size=5),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
    st.booleans(),
)
def test_framer_only_raises_typed_errors(
    data: bytes, kinds: list[ResponseKind], cuts: list[int], one_byte: bool
) -> None:
    framer = ResponseFramer()
    for kind in kinds:
        framer.expect(kind)
    parts = [data[i : i + 1] for i in range(len(data))] if one_byte else split(data, cuts)
    drain(framer, parts)  # anything but POP3Error propagates and fails the test


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600) | framing_bytes, st.booleans())
def test_command_reader_only_raises_typed_errors(data: bytes, one_byte: bool) -> None:
    parts = [data[i : i + 1] for i in range(len(data))] if one_byte else [data]
    drain(CommandReader(max_line=64), parts)

"""Hypothesis over the sans-I/O POP3 core: whatever the chunking, the framers give back exactly
the responses/commands that were sent (byte-exact `raw`), and garbage only ever raises the
core's own typed errors, after which the command reader is back in sync at the next line."""

from __future__ import annotations

import itertools
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.pop3.commands import ResponseKind
from bridge.pop3.errors import POP3Error
from bridge.pop3.events import (
    Command,
    ConnectionClosed,
    DataChunk,
    EndOfMultiline,
    Greeting,
    NeedData,
    StatusResponse,
)
from bridge.pop3.wire import CommandReader, ResponseFramer, dot_stuff

FUZZ = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MIN_TRIED = 400

cuts = st.lists(st.integers(min_value=0, max_value=100_000), max_size=30)
body_bytes = st.one_of(
    st.binary(max_size=400),
    st.lists(
        st.sampled_from([b"\r\n", b".", b"\r\n.", b"..", b"\r", b"\n", b"x", b"\x00", b"+OK"]),
        max_size=60,
    ).map(b"".join),
)
status_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    lambda s: s.encode()
)


@st.composite
def responses(draw: st.DrawFn) -> list[tuple[ResponseKind, bool, bytes, bytes]]:
    """(kind, ok, status text, body) per response; single-line or multi-line, +OK or -ERR."""
    out = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from([ResponseKind.SINGLE, ResponseKind.MULTI]))
        ok = draw(st.booleans())
        out.append((kind, ok, draw(status_text), draw(body_bytes)))
    return out


def split(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(marks) if b > a]


def test_response_framer_any_chunking(fuzz_counts: Counter[str]) -> None:
    name = "pop3 ResponseFramer: response sequences in arbitrary chunkings"

    @FUZZ
    @given(responses(), cuts)
    def check(resps: list[tuple[ResponseKind, bool, bytes, bytes]], points: list[int]) -> None:
        fuzz_counts[name] += 1
        wire = b"+OK ready\r\n"
        for _kind, ok, text, body in resps:
            wire += (b"+OK " if ok else b"-ERR ") + text + b"\r\n"
            if ok and _kind is ResponseKind.MULTI:
                wire += dot_stuff(body)
        framer = ResponseFramer()
        for kind, *_ in resps:
            framer.expect(kind)
        statuses: list[StatusResponse] = []
        bodies: list[bytes] = []
        raw = b""
        for part in [*split(wire, points), b""]:
            framer.receive_data(part)
            while not isinstance(event := framer.next_event(), NeedData | ConnectionClosed):
                if isinstance(event, Greeting):
                    raw += event.status.raw
                elif isinstance(event, StatusResponse):
                    statuses.append(event)
                    raw += event.raw
                    if event.ok:
                        bodies.append(b"")
                elif isinstance(event, DataChunk):
                    bodies[-1] += event.data
                    raw += event.raw
                elif isinstance(event, EndOfMultiline):
                    raw += event.raw
        assert raw == wire  # byte-exact: what a proxy relays is what the server sent
        assert [s.ok for s in statuses] == [ok for _k, ok, *_ in resps]
        want = [
            (b if not b or b.endswith(b"\r\n") else b + b"\r\n") if k is ResponseKind.MULTI else b""
            for k, ok, _t, b in resps
            if ok
        ]
        assert bodies == want

    check()
    assert fuzz_counts[name] >= MIN_TRIED


verbs = st.sampled_from(
    [
        "USER",
        "PASS",
        "STAT",
        "LIST",
        "RETR",
        "DELE",
        "UIDL",
        "TOP",
        "QUIT",
        "CAPA",
        "AUTH",
        "APOP",
        "NOOP",
        "RSET",
        "STLS",
        "user",
        "Retr",
    ]
)
arg = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)
garbage_line = st.one_of(
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"") + b"\x00\r\n"),
    st.just(b"\r\r\n"),
    st.just(b" NOOP\r\n"),
    st.just(b"TOOLONGVERB x\r\n"),
    st.integers(300, 3000).map(lambda n: b"X" * n + b"\r\n"),
)


@st.composite
def command_stream(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, bytes] | None]]:
    """Wire bytes plus, per line, (verb, raw) for a good line or None for a bad one."""
    wire, expected = b"", []
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 4)) == 0:
            line = draw(garbage_line)
            expected.append(None)
        else:
            verb = draw(verbs)
            args = draw(st.lists(arg, max_size=3))
            line = " ".join([verb, *args]).encode() + draw(st.sampled_from([b"\r\n", b"\n"]))
            expected.append((verb.upper(), line))
        wire += line
    return wire, expected


def test_command_reader_any_chunking_resyncs_after_garbage(fuzz_counts: Counter[str]) -> None:
    name = "pop3 CommandReader: pipelined commands + garbage in arbitrary chunkings"

    @FUZZ
    @given(command_stream(), cuts)
    def check(stream: tuple[bytes, list[tuple[str, bytes] | None]], points: list[int]) -> None:
        fuzz_counts[name] += 1
        wire, expected = stream
        reader = CommandReader()
        got: list[tuple[str, bytes] | None] = []
        for part in [*split(wire, points), b""]:
            reader.receive_data(part)
            while True:
                try:
                    event = reader.next_event()
                except POP3Error:
                    got.append(None)
                    continue
                if isinstance(event, NeedData | ConnectionClosed):
                    break
                assert isinstance(event, Command)
                got.append((event.verb, event.raw))
        # Every good command arrives in order with its exact bytes; every bad line costs exactly
        # one typed error and never swallows the command after it.
        assert got == expected

    check()
    assert fuzz_counts[name] >= MIN_TRIED

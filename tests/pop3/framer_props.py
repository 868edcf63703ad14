"""Properties of the framers over inputs that reach every bound they have.

Shared by the suite (tests/pop3/test_framer_bounds.py, a fixed budget) and the long fuzz
(bench/fuzz_framers.py, a time budget, not run by CI). Inputs are built from runs of framing
pieces with repeat counts drawn around each bound (stray LFs, the status-line limit, the
command-line and SASL-answer limits), so a few dozen drawn values make inputs of up to about a
hundred kilobytes: plain `st.binary(max_size=400)` never gets near an 8 KiB status line or the
ninth stray LF.
"""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

from bridge.pop3.commands import ResponseKind
from bridge.pop3.errors import POP3Error, RemoteProtocolError
from bridge.pop3.events import ConnectionClosed, Greeting, NeedData, StatusResponse
from bridge.pop3.wire import DEFAULT_MAX_STATUS_LINE, MAX_STRAY_LF, CommandReader, ResponseFramer

COMMAND_LINE = 255
AUTH_LINE = 64 * 1024


def _around(*bounds: int) -> list[int]:
    return sorted({n + d for n in bounds for d in (-2, -1, 0, 1, 2) if n + d > 0})


# Repeat counts just under, at and just over each bound, plus small ones.
BOUND_COUNTS = _around(1, MAX_STRAY_LF, COMMAND_LINE, DEFAULT_MAX_STATUS_LINE, AUTH_LINE)
counts = st.one_of(st.sampled_from(BOUND_COUNTS), st.integers(1, 3 * DEFAULT_MAX_STATUS_LINE))
pieces = st.sampled_from(
    [b"\n", b"\r\n", b"\r", b".", b"\r\n.\r\n", b"+OK", b"-ERR", b" ", b"x", b"\x00", b"+ "]
)
runs = st.lists(st.tuples(pieces, counts), max_size=6).map(
    lambda rs: b"".join(piece * n for piece, n in rs)
)
small = st.lists(pieces, max_size=40).map(b"".join)
bounded_bytes = st.one_of(small, runs, st.tuples(small, runs, small).map(b"".join))
cuts = st.lists(st.integers(min_value=0, max_value=200_000), max_size=12)
kinds = st.lists(st.sampled_from(list(ResponseKind)[:3]), max_size=5)


def split(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(marks) if b > a]


def drain(target: ResponseFramer | CommandReader, parts: list[bytes]) -> int:
    """Feed `parts` then EOF; returns the events seen. Only the core's typed errors may escape
    the framer (where they end the run: it cannot resync); the reader must resync after each."""
    seen = 0
    for part in [*parts, b""]:
        target.receive_data(part)
        for _ in range(len(part) + 100):
            try:
                event = target.next_event()
            except POP3Error:
                if isinstance(target, ResponseFramer):
                    return seen
                continue
            if isinstance(event, NeedData | ConnectionClosed):
                break
            seen += 1
        else:
            raise AssertionError("more events than bytes: a loop without progress")
    return seen


def check_framer_only_raises_typed_errors(
    data: bytes, expected: list[ResponseKind], points: list[int]
) -> None:
    framer = ResponseFramer()
    for kind in expected:
        framer.expect(kind)
    drain(framer, split(data, points))


def check_reader_only_raises_typed_errors(data: bytes, points: list[int], max_line: int) -> None:
    drain(CommandReader(max_line=max_line), split(data, points))


def check_stray_lf_bound(strays: int, points: list[int]) -> None:
    """Up to MAX_STRAY_LF stray LFs before a status line are skipped; one more is an error."""
    wire = b"+OK hi\r\n" + b"\n" * strays + b"+OK done\r\n"
    framer = ResponseFramer()
    framer.expect(ResponseKind.SINGLE)
    events: list[object] = []
    try:
        for part in split(wire, points):
            framer.receive_data(part)
            while not isinstance(event := framer.next_event(), NeedData):
                events.append(event)
    except RemoteProtocolError as exc:
        assert strays > MAX_STRAY_LF, exc
        assert "stray line feeds" in str(exc)
        return
    assert strays <= MAX_STRAY_LF
    assert isinstance(events[0], Greeting)
    assert isinstance(events[1], StatusResponse) and events[1].raw == b"+OK done\r\n"


def check_status_line_bound(length: int, points: list[int]) -> None:
    """A status line of `length` octets (CRLF included) is framed iff it fits the limit."""
    text = b"x" * max(0, length - len(b"+OK \r\n"))
    wire = b"+OK hi\r\n+OK " + text + b"\r\n"
    framer = ResponseFramer()
    framer.expect(ResponseKind.SINGLE)
    got: list[object] = []
    try:
        for part in split(wire, points):
            framer.receive_data(part)
            while not isinstance(event := framer.next_event(), NeedData):
                got.append(event)
    except RemoteProtocolError:
        assert len(wire) - 8 > DEFAULT_MAX_STATUS_LINE
        return
    assert len(wire) - 8 <= DEFAULT_MAX_STATUS_LINE
    assert isinstance(got[-1], StatusResponse) and got[-1].raw == wire[8:]


def check_command_line_bound(length: int, points: list[int], auth: bool) -> None:
    """A command line (or SASL answer) is read iff it fits its limit, and the reader reads the
    next line either way."""
    limit = AUTH_LINE if auth else COMMAND_LINE
    line = b"NOOP " + b"a" * max(0, length - 7) + b"\r\n" if not auth else b"a" * (length - 2)
    if auth:
        line += b"\r\n"
    wire = line + b"STAT\r\n"
    reader = CommandReader()
    if auth:
        reader.expect_auth_response()
    got: list[object] = []
    for part in [*split(wire, points), b""]:
        reader.receive_data(part)
        while True:
            try:
                event = reader.next_event()
            except POP3Error:
                got.append("bad")
                continue
            if isinstance(event, NeedData | ConnectionClosed):
                break
            got.append(event.raw)
    first = line if len(line) <= limit else "bad"
    assert got == [first, b"STAT\r\n"]

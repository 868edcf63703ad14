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


# -- span mode against event mode -----------------------------------------------------------
# Status lines around every rule span mode checks itself (plain token, no code, CRLF, no CR or
# NUL, PLAIN_STATUS_LINE) and every one it leaves to the events (stray LFs, SASL, long lines).
span_status = st.one_of(
    st.sampled_from(
        [
            b"+OK\r\n",
            b"+OK 120 octets\r\n",
            b"-ERR no such message\r\n",
            b"-ERR\r\n",
            b"+OK [IN-USE] busy\r\n",
            b"-ERR [SYS/TEMP] later\r\n",
            b"+OK bare LF\n",
            b"\n+OK after a stray LF\r\n",
            b"\r\n+OK after an empty line\r\n",
            b"+OK a\rCR inside\r\n",
            b"+OK a NUL \x00 inside\r\n",
            b"+OKAY\r\n",
            b"+ERR\r\n",
            b"+ challenge\r\n",
            b"+\r\n",
            b"garbage\r\n",
        ]
    ),
    st.sampled_from(_around(512, DEFAULT_MAX_STATUS_LINE)).map(
        lambda n: b"+OK " + b"y" * max(0, n - 6) + b"\r\n"
    ),
    st.integers(0, 3 * MAX_STRAY_LF).map(lambda n: b"\n" * n + b"+OK\r\n"),
    st.binary(max_size=12).map(lambda b: b"+OK " + b + b"\r\n"),
)
span_lines = st.lists(
    st.sampled_from([b".", b"..", b".x", b"x.", b"", b"text", b". .", b"\r", b"a\rb", b"\n"])
    | st.sampled_from(_around(512, 4096)).map(lambda n: b"z" * n),
    max_size=8,
)


@st.composite
def span_wire(draw: st.DrawFn) -> bytes:
    """A run of responses (bodies stuffed as a server stuffs them), sometimes broken or cut."""
    from bridge.pop3.wire import dot_stuff

    out = []
    for _ in range(draw(st.integers(0, 8))):
        status = draw(span_status)
        out.append(status)
        if draw(st.booleans()):
            out.append(dot_stuff(b"".join(line + b"\r\n" for line in draw(span_lines))))
    if draw(st.booleans()):
        out.append(draw(bounded_bytes))
    return b"".join(out)


span_kinds = st.lists(st.sampled_from(list(ResponseKind)[:3]), max_size=10)
# Cuts close together (every few octets, as a slow link delivers them) or anywhere.
span_cuts = st.one_of(
    st.lists(st.integers(1, 24), max_size=60).map(lambda s: list(itertools.accumulate(s))),
    cuts,
)


class _Run:
    """What one way of framing made of the input: the responses it ended (kind of line, ok,
    octets, body), the octets handed on after each part fed, and how it ended."""

    def __init__(self) -> None:
        self.units: list[tuple[str, bool | None, int, bytes]] = []
        self.handed: list[int] = []
        self.out = 0
        self.size = 0  # octets of the response being framed
        self.body = bytearray()
        self.by_events = False  # the response under way was started by `next_event`
        self.end: tuple[object, ...] = ("need",)

    def finish(self, tag: str, ok: bool | None, body: bytes | None = None) -> None:
        self.units.append((tag, ok, self.size, bytes(self.body) if body is None else body))
        self.size = 0
        self.body.clear()
        self.by_events = False

    def event(self, framer: ResponseFramer, event: object) -> bool:
        """Account for one event; False when the framer has nothing more to say."""
        from bridge.pop3.events import Continuation, DataChunk, EndOfMultiline

        if isinstance(event, NeedData):
            return False
        if isinstance(event, ConnectionClosed):
            self.end = ("closed",)
            return False
        raw = event.raw if not isinstance(event, Greeting) else event.status.raw
        assert isinstance(raw, bytes)
        self.out += len(raw)
        self.size += len(raw)
        if isinstance(event, Greeting):
            self.finish("greeting", event.ok)
        elif isinstance(event, Continuation):
            self.finish("continuation", None)
        elif isinstance(event, StatusResponse):
            self.by_events = True
            if not framer.in_body:
                self.finish("status", event.ok)
        elif isinstance(event, DataChunk):
            self.body += event.data
        elif isinstance(event, EndOfMultiline):
            self.finish("status", True)
        return True


def frame(
    framer: ResponseFramer,
    parts: list[bytes],
    *,
    spans: bool,
    whole: bool = False,
    ok_only: bool = False,
    limit: int = 0,
    batch: int = 0,
) -> _Run:
    """Feed `parts` then EOF and frame all of it: with events only, or with span mode wherever
    it applies and events for the rest, as the proxy (`whole=False`) and the client
    (`whole=True, ok_only=True`, events past `limit` buffered octets) use them; with `batch`,
    the client's batch reads take up to that many whole responses at once first
    (`take_bodies`), each of those a unit whose octets are all counted on the first."""
    from bridge.pop3.wire import SPAN_ERR, SPAN_EVENTS, SPAN_NEED, SPAN_OK

    run = _Run()

    def take() -> None:
        run.out += len(framer.take_span())

    try:
        for part in [*parts, b""]:
            framer.receive_data(part)
            while True:
                if batch and not framer.in_body and not framer.span_end:
                    before = framer.buffered()
                    bodies = framer.take_bodies(batch)
                    taken = before - framer.buffered()
                    run.out += taken
                    for body in bodies:
                        run.size, taken = taken, 0
                        run.finish("status", True, body)
                    if bodies:
                        continue
                if spans and not (framer.in_body and run.by_events):
                    before = framer.span_end
                    found = framer.next_span(whole=whole, ok_only=ok_only)
                    run.size += framer.span_end - before
                    if found == SPAN_NEED:
                        if whole and framer.in_body and framer.buffered() > limit:
                            take()  # too big to wait for whole: its body by events
                            run.by_events = True
                            continue
                        break
                    if found in (SPAN_OK, SPAN_ERR):
                        if whole:
                            run.out += framer.span_end
                            run.finish("status", found == SPAN_OK, framer.take_body())
                        else:
                            run.finish("status", found == SPAN_OK)
                        continue
                    if found != SPAN_EVENTS:
                        continue  # SPAN_PART
                    take()
                if not run.event(framer, framer.next_event()):
                    break
            if not whole:
                if spans:
                    take()
                run.handed.append(run.out)
            if run.end != ("need",):
                break
    except POP3Error as exc:
        run.end = (type(exc).__name__, str(exc))
    return run


def check_span_mode_equals_event_mode(
    data: bytes,
    expected: list[ResponseKind],
    points: list[int],
    line_ending: str,
    greeting: bool,
    limit: int,
) -> None:
    """Span mode (either way it is used) ends every response where the events end it, with the
    same octets, status and un-stuffed body, hands the proxy's client the same octets after
    every read, and fails with the same typed error."""

    def framer() -> ResponseFramer:
        made = ResponseFramer(line_ending=line_ending, expect_greeting=greeting)  # type: ignore[arg-type]
        for kind in expected:
            made.expect(kind)
        return made

    parts = split(data, points)
    events = frame(framer(), parts, spans=False)
    relay = frame(framer(), parts, spans=True)
    assert relay.end == events.end
    assert [u[:3] for u in relay.units] == [u[:3] for u in events.units]
    assert relay.handed == events.handed
    client = frame(framer(), parts, spans=True, whole=True, ok_only=True, limit=limit)
    assert client.end == events.end
    assert client.units == events.units
    # A batch's replies taken several at a time: the same bodies, octets and ending.
    for most in (1, 3, 100):
        batched = frame(
            framer(), parts, spans=True, whole=True, ok_only=True, limit=limit, batch=most
        )
        assert batched.end == events.end
        assert [u[:2] + u[3:] for u in batched.units] == [u[:2] + u[3:] for u in events.units]
        assert sum(u[2] for u in batched.units) == sum(u[2] for u in events.units)

"""The framer's terminator-only mode (`unstuff = False`) must end every body exactly where the
full framer does, for any bytes and any chunking, or a proxy relaying raw bodies would desync.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.pop3.commands import ResponseKind
from bridge.pop3.errors import POP3Error
from bridge.pop3.events import DataChunk, EndOfMultiline, NeedData, StatusResponse
from bridge.pop3.wire import ResponseFramer, dot_stuff
from tests.pop3.test_properties import any_bytes, split

Trace = list[tuple[str, bytes]]

# Pieces that make and break terminators, in both line-ending conventions.
body_bytes = st.one_of(
    any_bytes,
    st.lists(
        st.sampled_from([b".\r\n", b"\r\n.\r\n", b"\n.\n", b"\n.\r\n", b"..", b"\r\n..", b"ab"]),
        max_size=30,
    ).map(b"".join),
)
cuts = st.lists(st.integers(min_value=0, max_value=5_000), max_size=15)


def trace(wire: bytes, parts: list[bytes], *, unstuff: bool, line_ending: str) -> Trace:
    """Events as (kind, raw), consecutive chunks merged so chunkings compare; errors end it."""
    framer = ResponseFramer(line_ending=line_ending, expect_greeting=False)  # type: ignore[arg-type]
    framer.unstuff = unstuff
    for kind in (ResponseKind.MULTI, ResponseKind.MULTI, ResponseKind.SINGLE):
        framer.expect(kind)
    out: Trace = []
    try:
        for part in [*parts, b""]:
            framer.receive_data(part)
            while True:
                event = framer.next_event()
                if isinstance(event, NeedData):
                    break
                if isinstance(event, DataChunk):
                    if not unstuff:
                        assert event.data == event.raw
                    if out and out[-1][0] == "chunk":
                        out[-1] = ("chunk", out[-1][1] + event.raw)
                    else:
                        out.append(("chunk", event.raw))
                elif isinstance(event, EndOfMultiline):
                    out.append(("end", event.raw))
                elif isinstance(event, StatusResponse):
                    out.append(("status", event.raw))
                else:
                    out.append((type(event).__name__, b""))
                    return out
    except POP3Error as exc:
        out.append((type(exc).__name__, b""))
    return out


@settings(max_examples=400, deadline=None)
@given(
    body_bytes,
    body_bytes,
    st.booleans(),
    cuts,
    cuts,
    st.sampled_from(["crlf", "lf"]),
)
def test_terminator_only_ends_bodies_where_the_full_framer_does(
    first: bytes, second: bytes, stuffed: bool, cuts_a: list[int], cuts_b: list[int], le: str
) -> None:
    # Well-formed bodies (stuffed) and raw bytes that may end early or never.
    if stuffed:
        first, second = dot_stuff(first), dot_stuff(second)
    wire = b"+OK\r\n" + first + b"+OK two\r\n" + second + b"+OK three\r\n"
    full = trace(wire, split(wire, cuts_a), unstuff=True, line_ending=le)
    fast = trace(wire, split(wire, cuts_b), unstuff=False, line_ending=le)
    assert fast == full


def test_terminator_only_relays_stuffed_lines_untouched() -> None:
    body = dot_stuff(b".hidden\r\n..two\r\nplain\r\n")
    parts = [b"+OK\r\n", body[:3], body[3:9], body[9:]]
    framer = ResponseFramer(line_ending="crlf", expect_greeting=False)
    framer.expect(ResponseKind.MULTI)
    framer.unstuff = False
    chunks: list[bytes] = []
    for part in parts:
        framer.receive_data(part)
        while not isinstance(event := framer.next_event(), NeedData):
            if isinstance(event, DataChunk):
                chunks.append(event.data)
            elif isinstance(event, EndOfMultiline):
                chunks.append(b"<end>")
    assert b"".join(chunks) == body[:-3] + b"<end>"

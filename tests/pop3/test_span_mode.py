"""Span mode of the `ResponseFramer` (plain responses framed in place) against its event mode.

The property runs both over the same responses cut at arbitrary places: the proxy's way
(bodies framed as they arrive, a run of responses taken as one slice) and the client's way
(whole responses, bodies un-stuffed in bulk, events past a size) must end every response at
the same octet, with the same status, body and typed error as the events.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.pop3.commands import ResponseKind
from bridge.pop3.errors import LocalProtocolError
from bridge.pop3.wire import (
    SPAN_ERR,
    SPAN_EVENTS,
    SPAN_NEED,
    SPAN_OK,
    SPAN_PART,
    ResponseFramer,
    dot_stuff,
)

from . import framer_props as props


@settings(max_examples=600, deadline=None)
@given(
    props.span_wire(),
    props.span_kinds,
    props.span_cuts,
    st.sampled_from(["crlf", "crlf", "auto", "lf"]),
    st.booleans(),
    st.sampled_from([0, 7, 600, 1 << 20]),
)
def test_span_mode_frames_what_event_mode_frames(
    data: bytes,
    kinds: list[ResponseKind],
    points: list[int],
    line_ending: str,
    greeting: bool,
    limit: int,
) -> None:
    props.check_span_mode_equals_event_mode(data, kinds, points, line_ending, greeting, limit)


def _framer(*kinds: ResponseKind) -> ResponseFramer:
    framer = ResponseFramer(line_ending="crlf", expect_greeting=False)
    for kind in kinds:
        framer.expect(kind)
    return framer


def test_a_run_of_plain_responses_is_one_slice() -> None:
    framer = _framer(ResponseKind.MULTI, ResponseKind.SINGLE, ResponseKind.MULTI)
    wire = b"+OK\r\n..a\r\n.\r\n-ERR no\r\n+OK 2 octets\r\nb\r\n.\r\n"
    framer.receive_data(wire)
    assert [framer.next_span() for _ in range(4)] == [SPAN_OK, SPAN_ERR, SPAN_OK, SPAN_NEED]
    assert framer.take_span() == wire
    assert framer.outstanding == 0 and framer.buffered() == 0


def test_whole_mode_hands_the_body_unstuffed_and_waits_for_its_end() -> None:
    framer = _framer(ResponseKind.MULTI)
    framer.receive_data(b"+OK\r\n..a\r\nb\r\n.")
    assert framer.next_span(whole=True) == SPAN_PART
    assert framer.next_span(whole=True) == SPAN_NEED
    framer.receive_data(b".c\r\n.\r\n")
    assert framer.next_span(whole=True) == SPAN_OK
    assert framer.take_body() == b".a\r\nb\r\n.c\r\n"


def test_what_is_not_plain_is_left_to_the_events() -> None:
    for line in (b"+OK [IN-USE] x\r\n", b"\n+OK\r\n", b"+OK a\rb\r\n", b"+OK " + b"x" * 600):
        framer = _framer(ResponseKind.SINGLE)
        framer.receive_data(line)
        assert framer.next_span() == SPAN_EVENTS, line
    framer = _framer(ResponseKind.SINGLE)
    framer.receive_data(b"-ERR no\r\n")
    assert framer.next_span(ok_only=True) == SPAN_EVENTS


def test_events_wait_until_the_span_is_taken() -> None:
    framer = _framer(ResponseKind.SINGLE, ResponseKind.MULTI)
    framer.receive_data(b"+OK\r\n+OK [X] y\r\n" + dot_stuff(b"z\r\n"))
    assert framer.next_span() == SPAN_OK
    assert framer.next_span() == SPAN_EVENTS
    with pytest.raises(LocalProtocolError):
        framer.next_event()
    assert framer.take_span() == b"+OK\r\n"
    assert framer.next_event().raw == b"+OK [X] y\r\n"  # type: ignore[union-attr]
    # The body of a response started by the events may go on in span mode (the relay does not).
    assert framer.next_span() == SPAN_OK
    assert framer.take_span() == b"z\r\n.\r\n"


def test_a_body_streams_in_pieces_that_never_split_a_terminator() -> None:
    framer = _framer(ResponseKind.MULTI)
    wire = b"+OK\r\nab\r\n.\r\n"
    got = bytearray()
    found = []
    for i in range(len(wire)):
        framer.receive_data(wire[i : i + 1])
        while (step := framer.next_span()) not in (SPAN_NEED,):
            found.append(step)
            if step == SPAN_OK:
                break
        got += framer.take_span()
    assert bytes(got) == wire
    assert found.count(SPAN_OK) == 1 and SPAN_PART in found


def test_every_cut_of_every_dot_line_frames_alike() -> None:
    lines = [b".", b"..", b".x", b"x.", b"", b"text", b". .", b"\r", b"a\rb", b"\n", b"x"]
    body = dot_stuff(b"".join(line + b"\r\n" for line in lines))
    wire = b"+OK\r\n" + body + b"-ERR\r\n+OK 1 2\r\n" + b"+OK\r\n" + dot_stuff(b"x.\r\n.y")
    kinds = [ResponseKind.MULTI, ResponseKind.MULTI, ResponseKind.SINGLE, ResponseKind.MULTI]
    for limit in (0, 1 << 20):
        props.check_span_mode_equals_event_mode(
            wire, kinds, list(range(len(wire))), "crlf", False, limit
        )
        for cut in range(len(wire)):
            props.check_span_mode_equals_event_mode(wire, kinds, [cut], "crlf", False, limit)

"""Response framer, dot-stuffing and command reader (bridge/pop3/wire.py)."""

from __future__ import annotations

import pytest

from bridge.pop3.commands import ResponseKind
from bridge.pop3.errors import BadCommandLine, ConnectionLost, RemoteProtocolError
from bridge.pop3.events import (
    AuthResponseLine,
    Command,
    ConnectionClosed,
    DataChunk,
    EndOfMultiline,
    Greeting,
    StatusResponse,
)
from bridge.pop3.wire import CommandReader, ResponseFramer, dot_stuff, dot_unstuff

from .helpers import chunkings, feed

GREETING = b"+OK ready\r\n"


def framer(*kinds: ResponseKind, **kw: object) -> ResponseFramer:
    f = ResponseFramer(**kw)  # type: ignore[arg-type]
    for kind in kinds:
        f.expect(kind)
    return f


def body_of(events: list[object]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, DataChunk))


# (wire after the greeting, kinds expected, un-stuffed bodies per multi-line reply)
BODY_CASES = [
    (b"+OK\r\n.\r\n", [ResponseKind.MULTI], [b""]),  # empty LIST (F5)
    (b"+OK\r\nline\r\n.\r\n", [ResponseKind.MULTI], [b"line\r\n"]),
    (b"+OK\r\n..\r\n...\r\n.x\r\n. \r\n.\r\n", [ResponseKind.MULTI], [b".\r\n..\r\nx\r\n \r\n"]),
    (
        b"+OK 5 octets\r\n..a\r\n.\r\n+OK\r\n",
        [ResponseKind.MULTI, ResponseKind.SINGLE],
        [b".a\r\n"],
    ),
    (b"-ERR no such message\r\n+OK\r\nx\r\n.\r\n", [ResponseKind.MULTI] * 2, [b"x\r\n"]),  # F6
    (
        b"+OK\r\nbare\nlf\n.\nstill body\r\n.\r\n",
        [ResponseKind.MULTI],
        [b"bare\nlf\n.\nstill body\r\n"],
    ),
    (b"+OK\r\na\r.\r\n.\r\n", [ResponseKind.MULTI], [b"a\r.\r\n"]),
    (b"+OK\r\n.\rx\r\n.\r\n", [ResponseKind.MULTI], [b"\rx\r\n"]),
]


@pytest.mark.parametrize(("wire", "kinds", "bodies"), BODY_CASES)
def test_multiline_bodies_in_every_chunking(
    wire: bytes, kinds: list[ResponseKind], bodies: list[bytes]
) -> None:
    full = GREETING + wire
    for parts in chunkings(full):
        events = feed(framer(*kinds), parts)
        assert b"".join(e.raw for e in events) == full  # type: ignore[attr-defined]
        got, current = [], b""
        for e in events:
            if isinstance(e, DataChunk):
                current += e.data
            elif isinstance(e, EndOfMultiline):
                got.append(current)
                current = b""
        assert got == bodies
        assert isinstance(events[0], Greeting)
        assert sum(isinstance(e, StatusResponse) for e in events) == len(kinds)


def test_terminator_split_at_every_byte_boundary() -> None:
    wire = GREETING + b"+OK\r\nabc\r\n.\r\n"
    for cut in range(1, len(wire)):
        events = feed(framer(ResponseKind.MULTI), [wire[:cut], wire[cut:]])
        assert body_of(events) == b"abc\r\n"
        assert isinstance(events[-1], EndOfMultiline)


def test_long_body_line_streams_without_limit() -> None:
    # poplib gives up at 2,048 bytes; a 1 MB line must pass, in bounded pieces.
    line = b"x" * 1_000_000
    f = framer(ResponseKind.MULTI)
    feed(f, [GREETING, b"+OK\r\n"])
    sizes = []
    for i in range(0, len(line), 65536):
        f.receive_data(line[i : i + 65536])
        event = f.next_event()
        assert isinstance(event, DataChunk)
        sizes.append(len(event.data))
        assert f.buffered() == 0
    assert sum(sizes) == len(line)
    rest = feed(f, [b"\r\n.\r\n"])
    assert body_of(rest) == b"\r\n" and isinstance(rest[-1], EndOfMultiline)


def test_status_line_over_512_is_accepted_up_to_cap() -> None:
    text = b"-ERR " + b"y" * 5000 + b"\r\n"
    events = feed(framer(ResponseKind.SINGLE), [GREETING, text])
    assert isinstance(events[1], StatusResponse) and not events[1].ok
    with pytest.raises(RemoteProtocolError, match="longer than"):
        feed(framer(ResponseKind.SINGLE), [GREETING, b"+OK " + b"z" * 10_000])
    with pytest.raises(RemoteProtocolError, match="longer than"):
        feed(
            framer(ResponseKind.SINGLE, max_status_line=100),
            [GREETING, b"+OK " + b"z" * 200 + b"\r\n"],
        )


def test_list_sizes_never_frame() -> None:
    # A reply announcing 3 octets but carrying more is framed by the terminator only (F10).
    wire = GREETING + b"+OK 3 octets\r\nmore than three\r\n.\r\n+OK\r\n"
    events = feed(framer(ResponseKind.MULTI, ResponseKind.SINGLE), [wire])
    assert body_of(events) == b"more than three\r\n"
    assert isinstance(events[-1], StatusResponse)


def test_body_without_final_crlf_before_dot_is_content() -> None:
    # "abc.\r\n" is not a terminator: the dot is not at the start of a line.
    wire = GREETING + b"+OK\r\nabc.\r\n.\r\n"
    assert body_of(feed(framer(ResponseKind.MULTI), [wire])) == b"abc.\r\n"


def test_eof_mid_body_and_before_greeting_raise_connection_lost() -> None:
    with pytest.raises(ConnectionLost, match="middle"):
        feed(framer(ResponseKind.MULTI), [GREETING, b"+OK\r\npartial"], eof=True)
    with pytest.raises(ConnectionLost, match="greeting"):
        feed(framer(), [b"+OK hal"], eof=True)


def test_clean_eof_gives_connection_closed() -> None:
    events = feed(framer(ResponseKind.SINGLE), [GREETING, b"+OK bye\r\n"], eof=True)
    assert isinstance(events[-1], ConnectionClosed)


def test_unsolicited_bytes_are_an_error() -> None:
    with pytest.raises(RemoteProtocolError, match="nobody asked"):
        feed(framer(), [GREETING, b"+OK surprise\r\n"])


def test_bare_lf_server_detected_from_greeting() -> None:
    wire = b"+OK lf server\n+OK\nline one\n..dot\n.\n+OK 1 2\n"
    for parts in chunkings(wire):
        f = framer(ResponseKind.MULTI, ResponseKind.SINGLE)
        events = feed(f, parts)
        assert f.bare_lf
        assert isinstance(events[0], Greeting) and events[0].bare_lf
        assert body_of(events) == b"line one\n.dot\n"
        assert isinstance(events[-1], StatusResponse) and events[-1].text == "1 2"


def test_crlf_server_status_line_with_bare_lf_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="bare LF"):
        feed(framer(ResponseKind.SINGLE), [GREETING, b"+OK sneaky\n"])


def test_stray_lf_before_status_is_tolerated() -> None:
    events = feed(framer(ResponseKind.SINGLE), [GREETING, b"\n+OK\r\n"])
    assert isinstance(events[1], StatusResponse) and events[1].ok


def test_sasl_continuations() -> None:
    wire = GREETING + b"+ \r\n+ dGVzdA==\r\n+\r\n+OK done\r\n"
    events = feed(framer(ResponseKind.SASL), [wire])
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Greeting", "Continuation", "Continuation", "Continuation", "StatusResponse"]
    assert [e.data for e in events[1:4]] == ["", "dGVzdA==", ""]  # type: ignore[attr-defined]


def test_discard_buffer() -> None:
    f = framer(ResponseKind.SINGLE)
    f.receive_data(GREETING + b"+OK\r\n+OK injected\r\n")
    f.next_event()
    f.next_event()
    assert f.buffered() == len(b"+OK injected\r\n")
    assert f.discard_buffer() == b"+OK injected\r\n"


# -- dot-stuffing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (b"", b".\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"x\r\n.y\r\n..z", b"x\r\n..y\r\n...z\r\n.\r\n"),
        (b"x\n.y\n", b"x\n.y\n\r\n.\r\n"),  # bare LF is not a line break for the framer
    ],
)
def test_dot_stuff(message: bytes, wire: bytes) -> None:
    assert dot_stuff(message) == wire
    expected = message if message.endswith(b"\r\n") or not message else message + b"\r\n"
    assert dot_unstuff(wire) == expected


def test_dot_unstuff_refuses_early_terminator() -> None:
    with pytest.raises(RemoteProtocolError):
        dot_unstuff(b"a\r\n.\r\nb\r\n.\r\n")


# -- command reader ------------------------------------------------------------------------


def read_all(reader: CommandReader, data: bytes) -> list[object]:
    out: list[object] = []
    for parts in [[data]]:
        for p in parts:
            reader.receive_data(p)
            while True:
                try:
                    event = reader.next_event()
                except BadCommandLine as exc:
                    out.append(exc.reason)
                    continue
                if type(event).__name__ == "NeedData":
                    break
                out.append(event)
    return out


def test_command_reader_parses_and_keeps_raw() -> None:
    wire = b"user bob\r\nPASS a b  c\r\ndElE 1\nNOOP\r\n"
    for parts in chunkings(wire):
        r = CommandReader()
        events = feed(r, parts)
        assert events == [
            Command("USER", ("bob",)),
            Command("PASS", ("a b  c",)),
            Command("DELE", ("1",)),
            Command("NOOP"),
        ]
        assert b"".join(e.raw for e in events) == wire  # type: ignore[attr-defined]


def test_command_reader_rejects_without_losing_sync() -> None:
    wire = b"NO\x00OP\r\nRE\rTR 1\r\n" + b"X" * 300 + b"\r\nSTAT\r\n \r\nNOOPS\r\nQUIT\r\n"
    out = read_all(CommandReader(), wire)
    assert out == [
        "nul",
        "bare-cr",
        "too-long",
        Command("STAT"),
        "bad-keyword",
        "bad-keyword",
        Command("QUIT"),
    ]


def test_command_reader_keywords_are_printable_ascii() -> None:
    # RFC 2449 §3 (keyword = 3*4VCHAR): RFC 6856's UTF8 has a digit and is a command, not a
    # malformed line; a control character or a non-ASCII octet still is one.
    wire = b"UTF8\r\nutf8\r\nX-1 a\r\nUT\x7fF\r\nUT\xc3\x9c\r\n"
    out = read_all(CommandReader(), wire)
    assert out == [
        Command("UTF8"),
        Command("UTF8"),
        Command("X-1", ("a",)),
        "bad-keyword",
        "bad-keyword",
    ]


def test_command_reader_long_line_split_across_reads() -> None:
    r = CommandReader(max_line=255)
    out: list[object] = []
    for part in [b"A" * 200, b"A" * 200, b"A" * 200, b"\r\nNOOP\r\n"]:
        r.receive_data(part)
        while True:
            try:
                e = r.next_event()
            except BadCommandLine as exc:
                out.append(exc.reason)
                continue
            if type(e).__name__ == "NeedData":
                break
            out.append(e)
    assert out == ["too-long", Command("NOOP")]


def test_command_reader_255_limit_edges() -> None:
    for size, ok in ((254, True), (255, True), (256, False)):
        line = b"NOOP " + b"a" * (size - 7) + b"\r\n"
        assert len(line) == size
        out = read_all(CommandReader(), line)
        assert (out != ["too-long"]) is ok


def test_command_reader_auth_response_may_be_long() -> None:
    r = CommandReader()
    r.expect_auth_response()
    token = b"QUFB" * 1000
    out = read_all(r, token + b"\r\nNOOP\r\n")
    assert isinstance(out[0], AuthResponseLine) and out[0].data == token.decode()
    assert out[1] == Command("NOOP")


def test_command_reader_eof() -> None:
    assert feed(CommandReader(), [b"NOOP\r\n"], eof=True) == [Command("NOOP"), ConnectionClosed()]

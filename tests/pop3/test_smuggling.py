"""Smuggling: bodies and arguments that try to end a response early or inject commands.

A body is ended by CRLF "." CRLF only. Anything that merely looks like an end to a lenient
parser (bare LF, bare CR) must stay content, and a fake "+OK" after it must stay content too,
so the next real reply is still matched to the right command.
"""

from __future__ import annotations

import pytest

from bridge.pop3.connection import ClientConnection
from bridge.pop3.errors import LocalProtocolError, RemoteProtocolError
from bridge.pop3.events import Command, DataChunk, EndOfMultiline, StatusResponse
from bridge.pop3.wire import dot_stuff

from .helpers import chunkings, feed, logged_in

TRICKS = [
    b"a\n.\r\n+OK fake\r\n",
    b"a\r\n.\n+OK fake\r\n",
    b"a\n.\n+OK fake\r\n",
    b"a\r.\r\n+OK fake\r\n",
    b"a\r\n.\r+OK fake\r\n",
    b"a\r\n.\x00\r\n+OK fake\r\n",
    b"a\r\n. \r\n-ERR fake\r\n",
]


@pytest.mark.parametrize("body", TRICKS)
def test_fake_terminators_stay_content(body: bytes) -> None:
    wire = b"+OK\r\n" + body + b".\r\n" + b"+OK 7 bytes\r\n"
    for parts in chunkings(wire):
        c = ClientConnection()
        feed(c, [b"+OK hi\r\n"])
        c.send(Command("CAPA"))
        c.send(Command("NOOP"))
        events = feed(c, parts)
        data = b"".join(e.data for e in events if isinstance(e, DataChunk))
        ends = [e for e in events if isinstance(e, EndOfMultiline)]
        assert len(ends) == 1
        # The un-stuffed body keeps the trick bytes; only a real ". " line loses its dot.
        assert b"+OK fake" in data or b"-ERR fake" in data
        assert b"".join(e.raw for e in events) == wire  # type: ignore[attr-defined]
        last = events[-1]
        assert isinstance(last, StatusResponse) and last.text == "7 bytes"


def test_fake_reply_inside_body_does_not_answer_next_command() -> None:
    message = b"Subject: x\r\n\r\n+OK 0 0\r\n.\r\n-ERR\r\n"  # a message quoting a session
    wire = b"+OK\r\n" + dot_stuff(message) + b"+OK 2 300\r\n"
    for parts in chunkings(wire):
        c = logged_in()
        c.send(Command("RETR", ("1",)))
        c.send(Command("STAT"))
        events = feed(c, parts)
        statuses = [e for e in events if isinstance(e, StatusResponse)]
        assert [s.text for s in statuses] == ["", "2 300"]
        assert b"".join(e.data for e in events if isinstance(e, DataChunk)) == message


@pytest.mark.parametrize("arg", ["x\r\nDELE 1", "x\nDELE 1", "x\rDELE 1", "x\x00"])
@pytest.mark.parametrize("verb", ["USER", "PASS", "RETR", "APOP"])
def test_crlf_injection_in_arguments(verb: str, arg: str) -> None:
    c = ClientConnection()
    feed(c, [b"+OK hi\r\n"])
    args = (arg, "d" * 32) if verb == "APOP" else (arg,)
    with pytest.raises(LocalProtocolError):
        if verb == "RETR":
            c.send(Command("USER", ("u",)))
            feed(c, [b"+OK\r\n"])
            c.send(Command("PASS", ("p",)))
            feed(c, [b"+OK\r\n"])
        c.send(Command(verb, args))


def test_data_after_stls_reply_is_refused() -> None:
    # CVE-2021-22947: "+OK fake" sent before the handshake must not be read as a TLS reply.
    c = ClientConnection()
    feed(c, [b"+OK hi\r\n"])
    c.send(Command("STLS"))
    with pytest.raises(RemoteProtocolError, match="STLS"):
        feed(c, [b"+OK begin TLS\r\n+OK fake\r\n"])


def test_data_trickling_in_after_stls_reply_is_refused() -> None:
    c = ClientConnection()
    feed(c, [b"+OK hi\r\n"])
    c.send(Command("STLS"))
    feed(c, [b"+OK begin TLS\r\n"])
    with pytest.raises(LocalProtocolError):
        c.send(Command("CAPA"))
    with pytest.raises(RemoteProtocolError, match="out of turn"):
        feed(c, [b"+OK fake\r\n"])


def test_bare_lf_mode_needs_a_bare_lf_greeting() -> None:
    # On a CRLF server, a body line "." ended by bare LF is content, not the end.
    c = ClientConnection()
    feed(c, [b"+OK crlf\r\n"])
    c.send(Command("CAPA"))
    events = feed(c, [b"+OK\r\nTOP\n.\nUIDL\r\n.\r\n"])
    assert b"".join(e.data for e in events if isinstance(e, DataChunk)) == b"TOP\n.\nUIDL\r\n"

"""ClientConnection: state checks before sending, FIFO matching, exclusivity of AUTH/STLS/QUIT."""

from __future__ import annotations

import pytest

from bridge.pop3.connection import ClientConnection
from bridge.pop3.errors import LocalProtocolError, RemoteProtocolError
from bridge.pop3.events import Command, Continuation, DataChunk, EndOfMultiline, StatusResponse
from bridge.pop3.state import State
from bridge.pop3.wire import dot_stuff

from .helpers import chunkings, feed, logged_in


def test_misuse_raises_before_anything_is_sent() -> None:
    c = ClientConnection()
    with pytest.raises(LocalProtocolError):
        c.send(Command("USER", ("u",)))  # greeting not yet received
    feed(c, [b"+OK hi\r\n"])
    with pytest.raises(LocalProtocolError, match="RETR"):
        c.send(Command("RETR", ("1",)))
    with pytest.raises(LocalProtocolError, match="PASS"):
        c.send(Command("PASS", ("p",)))
    assert c.outstanding == 0


def test_pipelined_replies_matched_in_order() -> None:
    messages = [b"one\r\n", b".two\r\n", b"three"]
    wire = b"".join(b"+OK\r\n" + dot_stuff(m) for m in messages) + b"+OK 1 deleted\r\n"
    for parts in chunkings(wire):
        c = logged_in()
        sent = b"".join(c.send(Command("RETR", (str(i),))) for i in (1, 2, 3))
        sent += c.send(Command("DELE", ("1",)))
        assert sent == b"RETR 1\r\nRETR 2\r\nRETR 3\r\nDELE 1\r\n"
        assert c.outstanding == 4
        bodies, current, seen = [], b"", []
        for parts_event in feed(c, parts):
            if isinstance(parts_event, DataChunk):
                current += parts_event.data
            elif isinstance(parts_event, EndOfMultiline):
                bodies.append(current)
                current = b""
            elif isinstance(parts_event, StatusResponse):
                seen.append(parts_event.text)
        assert bodies == [b"one\r\n", b".two\r\n", b"three\r\n"]
        assert seen[-1] == "1 deleted"
        assert c.outstanding == 0


def test_current_command_tracks_fifo() -> None:
    c = logged_in()
    c.send(Command("LIST"))
    c.send(Command("STAT"))
    assert c.current_command == Command("LIST")
    feed(c, [b"+OK\r\n1 5\r\n.\r\n"])
    assert c.current_command == Command("STAT")


@pytest.mark.parametrize("verb", ["QUIT", "STLS", "USER", "AUTH"])
def test_exclusive_commands_never_pipelined(verb: str) -> None:
    c = ClientConnection()
    feed(c, [b"+OK hi\r\n"])
    c.send(Command("CAPA"))
    args = ("u",) if verb == "USER" else ("PLAIN",) if verb == "AUTH" else ()
    with pytest.raises(LocalProtocolError, match="cannot be pipelined"):
        c.send(Command(verb, args))
    feed(c, [b"+OK\r\n.\r\n"])
    c.send(Command(verb, args))
    with pytest.raises(LocalProtocolError, match="waiting for the reply"):
        c.send(Command("NOOP"))


def test_sasl_exchange() -> None:
    c = ClientConnection()
    feed(c, [b"+OK hi\r\n"])
    assert c.send(Command("AUTH", ("LOGIN",))) == b"AUTH LOGIN\r\n"
    events = feed(c, [b"+ VXNlcm5hbWU6\r\n"])
    assert len(events) == 1 and isinstance(events[0], Continuation)
    assert events[0].data == "VXNlcm5hbWU6"
    with pytest.raises(LocalProtocolError):
        c.send(Command("NOOP"))
    assert c.send_auth_response("dXNlcg==") == b"dXNlcg==\r\n"
    feed(c, [b"+ UGFzc3dvcmQ6\r\n"])
    assert c.send_auth_response(None) == b"*\r\n"
    events = feed(c, [b"-ERR [AUTH] cancelled\r\n"])
    assert isinstance(events[0], StatusResponse) and events[0].has_code("AUTH")
    assert c.state is State.AUTHORIZATION


def test_sasl_response_cannot_smuggle_lines() -> None:
    c = ClientConnection()
    feed(c, [b"+OK hi\r\n"])
    c.send(Command("AUTH", ("PLAIN",)))
    feed(c, [b"+ \r\n"])
    with pytest.raises(LocalProtocolError):
        c.send_auth_response("abc\r\nDELE 1")


def test_challenge_outside_auth_is_remote_error() -> None:
    c = ClientConnection()
    feed(c, [b"+OK hi\r\n"])
    c.send(Command("CAPA"))
    with pytest.raises(RemoteProtocolError):
        feed(c, [b"+ abc\r\n"])


def test_quit_from_transaction_enters_update() -> None:
    c = logged_in()
    c.send(Command("QUIT"))
    feed(c, [b"+OK bye\r\n"])
    assert c.state is State.UPDATE
    with pytest.raises(LocalProtocolError):
        c.send(Command("NOOP"))

"""`ClientConnection.send_behind_login`: commands behind a login's last line, before its reply.

The rules: only right behind the last line (PASS, APOP, AUTH with its initial response or
with an answer to a challenge), only commands the state after the login's +OK allows and never
an exclusive one, nothing else sent until the login's reply is in; a refused login leaves the
replies framed in AUTHORIZATION; a challenge after the last answer is a protocol error.
"""

from __future__ import annotations

import pytest

from bridge.pop3.connection import ClientConnection
from bridge.pop3.errors import LocalProtocolError, RemoteProtocolError
from bridge.pop3.events import Command, DataChunk, EndOfMultiline, StatusResponse
from bridge.pop3.state import State

from .helpers import chunkings, feed, merge_chunks

BEHIND = (Command("CAPA"), Command("STAT"), Command("UIDL"))
# The replies a server gives behind an accepted login, and behind a refused one.
ACCEPTED = b"+OK\r\nUIDL\r\nPIPELINING\r\n.\r\n+OK 1 5\r\n+OK\r\n1 abc\r\n.\r\n"
REFUSED = b"+OK\r\nSASL CRAM-MD5\r\n.\r\n-ERR Unknown command.\r\n-ERR Unknown command.\r\n"


def greeted() -> ClientConnection:
    c = ClientConnection()
    feed(c, [b"+OK hi\r\n"])
    return c


def statuses(events: list[object]) -> list[tuple[bool, str]]:
    return [(e.ok, e.text) for e in events if isinstance(e, StatusResponse)]


def test_behind_pass_one_write_and_the_replies_in_order() -> None:
    for parts in chunkings(b"+OK logged in\r\n" + ACCEPTED):
        c = greeted()
        c.send(Command("USER", ("u",)))
        feed(c, [b"+OK\r\n"])
        wire = c.send(Command("PASS", ("p",))) + c.send_behind_login(BEHIND)
        assert wire == b"PASS p\r\nCAPA\r\nSTAT\r\nUIDL\r\n"
        assert c.outstanding == 4
        events = merge_chunks(feed(c, parts))
        assert statuses(events) == [(True, "logged in"), (True, ""), (True, "1 5"), (True, "")]
        bodies = [e.data for e in events if isinstance(e, DataChunk)]
        assert bodies == [b"UIDL\r\nPIPELINING\r\n", b"1 abc\r\n"]
        assert sum(isinstance(e, EndOfMultiline) for e in events) == 2
        assert c.state is State.TRANSACTION and c.outstanding == 0


def test_a_refused_login_leaves_their_replies_framed_in_authorization() -> None:
    for parts in chunkings(b"-ERR [AUTH] no\r\n" + REFUSED):
        c = greeted()
        c.send(Command("AUTH", ("PLAIN", "AHUAcA==")))
        c.send_behind_login(BEHIND)
        events = merge_chunks(feed(c, parts))
        assert statuses(events) == [
            (False, "no"),
            (True, ""),
            (False, "Unknown command."),
            (False, "Unknown command."),
        ]
        assert [e.data for e in events if isinstance(e, DataChunk)] == [b"SASL CRAM-MD5\r\n"]
        # Still AUTHORIZATION, nothing outstanding: the next mechanism may be tried.
        assert c.state is State.AUTHORIZATION and c.outstanding == 0
        assert c.send(Command("AUTH", ("CRAM-MD5",))) == b"AUTH CRAM-MD5\r\n"


def test_behind_the_answer_to_a_challenge() -> None:
    c = greeted()
    c.send(Command("AUTH", ("CRAM-MD5",)))
    with pytest.raises(LocalProtocolError, match="last line"):
        c.send_behind_login(BEHIND)  # nothing answered yet: the AUTH line is not the last
    feed(c, [b"+ PDEyMz4=\r\n"])
    with pytest.raises(LocalProtocolError, match="last line"):
        c.send_behind_login(BEHIND)  # a challenge waits for its answer
    wire = c.send_auth_response("dSBkaWdlc3Q=") + c.send_behind_login(BEHIND)
    assert wire == b"dSBkaWdlc3Q=\r\nCAPA\r\nSTAT\r\nUIDL\r\n"
    feed(c, [b"+OK\r\n" + ACCEPTED])
    assert c.state is State.TRANSACTION and c.outstanding == 0


def test_never_behind_a_cancel() -> None:
    c = greeted()
    c.send(Command("AUTH", ("CRAM-MD5",)))
    feed(c, [b"+ PDEyMz4=\r\n"])
    c.send_auth_response(None)
    with pytest.raises(LocalProtocolError, match="last line"):
        c.send_behind_login(BEHIND)


def test_a_challenge_after_the_last_answer_is_a_protocol_error() -> None:
    # The server read CAPA as an answer: nothing after this can be matched to a command.
    c = greeted()
    c.send(Command("AUTH", ("PLAIN", "AHUAcA==")))
    c.send_behind_login(BEHIND)
    with pytest.raises(RemoteProtocolError, match="challenge after the last answer"):
        feed(c, [b"+ \r\n"])


@pytest.mark.parametrize(
    "command",
    [
        Command("QUIT"),  # exclusive, and ends the session
        Command("STLS"),  # exclusive, and not allowed in TRANSACTION
        Command("USER", ("u",)),  # not allowed in TRANSACTION
        Command("XYZZ"),  # no known framing
    ],
)
def test_only_ordinary_commands_of_the_state_after_the_login(command: Command) -> None:
    c = greeted()
    c.send(Command("APOP", ("u", "0" * 32)))
    with pytest.raises(LocalProtocolError):
        c.send_behind_login((Command("STAT"), command))
    assert c.outstanding == 1  # nothing queued: neither the good one nor the bad one
    assert c.send_behind_login((Command("STAT"),)) == b"STAT\r\n"


def test_only_behind_a_login_alone_and_only_once() -> None:
    c = greeted()
    c.send(Command("CAPA"))
    with pytest.raises(LocalProtocolError, match="last line"):
        c.send_behind_login(BEHIND)  # CAPA is no login
    feed(c, [b"+OK\r\nUSER\r\n.\r\n"])
    c.send(Command("USER", ("u",)))
    with pytest.raises(LocalProtocolError, match="last line"):
        c.send_behind_login(BEHIND)  # USER's +OK does not end AUTHORIZATION
    feed(c, [b"+OK\r\n"])
    c.send(Command("PASS", ("p",)))
    c.send_behind_login((Command("STAT"),))
    with pytest.raises(LocalProtocolError, match="last line"):
        c.send_behind_login((Command("UIDL"),))
    # And nothing by the ordinary way until the login's reply is in, not even CAPA.
    with pytest.raises(LocalProtocolError, match="waiting for the reply to PASS"):
        c.send(Command("CAPA"))
    feed(c, [b"+OK\r\n+OK 0 0\r\n"])
    assert c.send(Command("UIDL")) == b"UIDL\r\n"

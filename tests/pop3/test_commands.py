"""Command encoding, validation and the multi-line table (bridge/pop3/commands.py)."""

from __future__ import annotations

import pytest

from bridge.pop3.commands import ResponseKind, encode_command, response_kind
from bridge.pop3.errors import LocalProtocolError
from bridge.pop3.events import Command


def test_encoding_single_spaces_and_crlf() -> None:
    assert encode_command(Command("TOP", ("1", "0"))) == b"TOP 1 0\r\n"
    assert encode_command(Command("QUIT")) == b"QUIT\r\n"
    assert encode_command(Command("PASS", ("with spaces  kept",))) == b"PASS with spaces  kept\r\n"


@pytest.mark.parametrize("bad", ["a\r\nDELE 1", "a\nb", "a\rb", "a\x00b"])
def test_crlf_nul_injection_refused(bad: str) -> None:
    for verb in ("USER", "PASS"):
        with pytest.raises(LocalProtocolError, match="CR, LF or NUL"):
            encode_command(Command(verb, (bad,)))


def test_secret_never_in_error_message() -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode_command(Command("PASS", ("hunter2\r\n",)))
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(Command("PASS", ("hunter2",)))


@pytest.mark.parametrize("verb", ["RE", "RETRR", "retr", "Utf8", "RE T", "RÉTR", "NO\tP", ""])
def test_bad_keywords(verb: str) -> None:
    with pytest.raises(LocalProtocolError, match="keyword"):
        encode_command(Command(verb))


@pytest.mark.parametrize("verb", ["UTF8", "X-AB", "R3TR"])
def test_keywords_are_printable_ascii_not_only_letters(verb: str) -> None:
    # RFC 2449 §3: keyword = 3*4VCHAR; RFC 6856's UTF8 has a digit.
    assert encode_command(Command(verb)) == verb.encode() + b"\r\n"


def test_space_inside_argument_refused_except_pass() -> None:
    with pytest.raises(LocalProtocolError, match="space"):
        encode_command(Command("USER", ("a b",)))
    with pytest.raises(LocalProtocolError, match="exactly one"):
        encode_command(Command("PASS", ("a", "b")))
    with pytest.raises(LocalProtocolError, match="empty"):
        encode_command(Command("USER", ("",)))


def test_255_octet_limit() -> None:
    # "USER " + name + CRLF
    assert len(encode_command(Command("USER", ("a" * 248,)))) == 255
    with pytest.raises(LocalProtocolError, match="256 octets"):
        encode_command(Command("USER", ("a" * 249,)))


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        (Command("LIST"), ResponseKind.MULTI),
        (Command("LIST", ("1",)), ResponseKind.SINGLE),
        (Command("UIDL"), ResponseKind.MULTI),
        (Command("UIDL", ("1",)), ResponseKind.SINGLE),
        (Command("CAPA"), ResponseKind.MULTI),
        (Command("RETR", ("1",)), ResponseKind.MULTI),
        (Command("TOP", ("1", "0")), ResponseKind.MULTI),
        (Command("AUTH"), ResponseKind.MULTI),
        (Command("AUTH", ("PLAIN",)), ResponseKind.SASL),
        (Command("STAT"), ResponseKind.SINGLE),
        (Command("DELE", ("1",)), ResponseKind.SINGLE),
        (Command("LANG"), ResponseKind.MULTI),
        (Command("XTND", ("x",)), None),
        (Command("RETR"), None),
    ],
)
def test_multiline_table(command: Command, kind: ResponseKind | None) -> None:
    assert response_kind(command) is kind

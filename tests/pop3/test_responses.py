"""Status lines, response codes, greeting timestamps, CAPA/STAT/LIST/UIDL parsing."""

from __future__ import annotations

import pytest

from bridge.pop3.errors import RemoteProtocolError
from bridge.pop3.events import StatusResponse
from bridge.pop3.responses import (
    apop_timestamp,
    parse_capa,
    parse_list_line,
    parse_stat,
    parse_status_line,
    parse_uidl_line,
)


def status(line: bytes) -> StatusResponse:
    return parse_status_line(line, line + b"\r\n")


def test_ok_without_text() -> None:
    s = status(b"+OK")
    assert s.ok and s.text == "" and s.code is None


@pytest.mark.parametrize("line", [b"+ERR failed", b"+ok", b"-err x", b"+OKAY", b"OK", b"", b"* OK"])
def test_status_token_must_be_exact(line: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        status(line)


@pytest.mark.parametrize(
    ("line", "code", "text"),
    [
        (b"-ERR [IN-USE] locked", "IN-USE", "locked"),
        (b"-ERR [in-use] locked", "IN-USE", "locked"),
        (b"-ERR [SYS/TEMP/EXTRA] later", "SYS/TEMP/EXTRA", "later"),
        (b"-ERR [AUTH] Authentication failed.", "AUTH", "Authentication failed."),
        (b"-ERR [LOGIN-DELAY] wait", "LOGIN-DELAY", "wait"),
        (b"-ERR [UTF8] need utf8", "UTF8", "need utf8"),
        (b"-ERR [unclosed bracket", None, "[unclosed bracket"),
        (b"-ERR plain", None, "plain"),
    ],
)
def test_response_codes(line: bytes, code: str | None, text: str) -> None:
    s = status(line)
    assert (s.code, s.text) == (code, text)


def test_code_hierarchy_matching() -> None:
    s = status(b"-ERR [SYS/TEMP/EXTRA] x")
    assert s.has_code("SYS/TEMP") and s.has_code("sys") and not s.has_code("SYS/PERM")
    assert not status(b"-ERR [SYSTEM] x").has_code("SYS")


@pytest.mark.parametrize(
    ("text", "ts"),
    [
        (
            b"POP3 server ready <1896.697170952@dbc.mtview.ca.us>",
            "<1896.697170952@dbc.mtview.ca.us>",
        ),
        (b"[XCLIENT] Dovecot ready. <a.b@host>", "<a.b@host>"),
        (b"<x@y> at the start", "<x@y>"),
        (b"no timestamp <here>", None),
        (b"", None),
    ],
)
def test_apop_timestamp_anywhere(text: bytes, ts: str | None) -> None:
    assert apop_timestamp(text) == ts


def test_capa() -> None:
    caps = parse_capa(b"top\r\nUIDL\r\nSASL PLAIN login\r\nIMPLEMENTATION Cyrus POP3 v2\r\n\r\n")
    assert caps == {
        "TOP": (),
        "UIDL": (),
        "SASL": ("PLAIN", "login"),
        "IMPLEMENTATION": ("Cyrus", "POP3", "v2"),
    }


def test_stat() -> None:
    assert parse_stat(status(b"+OK 20437 123456789 extra")) == (20437, 123456789)
    for bad in (b"+OK", b"+OK 1", b"+OK x 2", b"+OK 1 -2"):
        with pytest.raises(RemoteProtocolError):
            parse_stat(status(bad))


def test_list_line() -> None:
    assert parse_list_line(b"1 120 extra") == (1, 120)
    with pytest.raises(RemoteProtocolError):
        parse_list_line(b"1")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"1 whqtswO00WBw418f9t5JxYwZ", (1, "whqtswO00WBw418f9t5JxYwZ")),
        (b"2    spaced-after-number", (2, "spaced-after-number")),
        (b"3 " + b"L" * 100, (3, "L" * 100)),
        (b"4 has inner space", (4, "has inner space")),
        (b"5", (5, "")),
    ],
)
def test_uidl_tolerant(line: bytes, expected: tuple[int, str]) -> None:
    assert parse_uidl_line(line) == expected


def test_uidl_non_numeric_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        parse_uidl_line(b"x abc")

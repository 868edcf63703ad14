"""Status lines, response codes, greeting timestamps, CAPA/STAT/LIST/UIDL parsing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.pop3.errors import RemoteProtocolError
from bridge.pop3.events import StatusResponse
from bridge.pop3.responses import (
    apop_timestamp,
    parse_capa,
    parse_list,
    parse_list_line,
    parse_stat,
    parse_status_line,
    parse_uidl,
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


# -- whole LIST and UIDL bodies -------------------------------------------------------------
# `parse_list` / `parse_uidl` take an ordinary body apart in one split; whatever the body,
# they must give what the line parser gives for each non-blank line (or raise as it does).
def _line_by_line(parse: Callable[[bytes], Any], body: bytes) -> Any:
    try:
        return [parse(line) for line in body.splitlines() if line.strip()]
    except RemoteProtocolError:
        return RemoteProtocolError


def _whole(parse: Callable[[bytes], Any], body: bytes) -> Any:
    try:
        return parse(body)
    except RemoteProtocolError:
        return RemoteProtocolError


_PIECES = [b"1", b"23", b"0", b"007", b" ", b"  ", b"\t", b"\r\n", b"\n", b"\r", b"abc", b"-"]
_PIECES += [b"\x7f", b"\x80", b"\xff", b"\x00", b"\x0b", b"\x1f", b"\x21", b"~", b"+5", b"\xe9"]
_BODY_PIECES = st.sampled_from(_PIECES)
_LINES = st.lists(
    st.one_of(
        st.tuples(st.integers(0, 10**12), st.integers(0, 10**12)).map(lambda t: b"%d %d" % t),
        st.tuples(st.integers(0, 10**6), st.binary(min_size=0, max_size=12)).map(
            lambda t: b"%d %s" % t
        ),
        st.lists(_BODY_PIECES, max_size=6).map(b"".join),
    ).map(lambda line: line + b"\r\n"),
    max_size=8,
).map(b"".join)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(_LINES, st.lists(_BODY_PIECES, max_size=20).map(b"".join)))
def test_whole_bodies_parse_as_line_by_line(body: bytes) -> None:
    assert _whole(parse_list, body) == _line_by_line(parse_list_line, body)
    assert _whole(parse_uidl, body) == _line_by_line(parse_uidl_line, body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"1 120\r\n2 4000\r\n",
        b"1 whqtswO00WBw418f9t5JxYwZ\r\n2 x\r\n",
        b"1 120\r\n\r\n2 4000\r\n",
        b"1 120\n2 4000\n",
        b"1 120 extra\r\n",
        b"1  120\r\n",
        b"1 120\r\n2\r\n",
        b"1 caf\xc3\xa9\r\n",
        b"x 1\r\n",
    ],
)
def test_whole_bodies_parse_as_line_by_line_edges(body: bytes) -> None:
    assert _whole(parse_list, body) == _line_by_line(parse_list_line, body)
    assert _whole(parse_uidl, body) == _line_by_line(parse_uidl_line, body)

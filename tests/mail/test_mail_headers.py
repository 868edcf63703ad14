from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

Build = Callable[..., dict[str, Any]]


def msg(*headers: str, body: str = "body\r\n") -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8", "surrogateescape")


def test_rfc2047_subject_words_joined_and_split_multibyte_repaired(build: Build) -> None:
    # "é" (C3 A9) split across two adjacent words, plus a Q word with underscores.
    raw = msg("Subject: =?utf-8?B?w6k=?= =?utf-8?Q?=C3?=\r\n =?utf-8?Q?=A9t=C3=A9_ok?= tail")
    data = build(raw)
    assert data["subject"] == "éété ok tail"


def test_rfc2047_in_other_charsets(build: Build) -> None:
    raw = msg(
        "Subject: =?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?= and =?koi8-r?q?=F0=D2=C9=D7=C5=D4?=",
    )
    assert build(raw)["subject"] == "日本語 and Привет"


def test_bad_encoded_words_kept_and_reported(build: Build) -> None:
    raw = msg("Subject: =?utf-8?B?####?= / =?x-nope?Q?caf=C3=A9?=")
    data = build(raw)
    assert data["subject"].startswith("=?utf-8?B?####?=")
    assert data["subject"].endswith("café")
    assert any("unknown charset 'x-nope'" in e for e in data["parse_errors"])


def test_encoded_display_names_and_address_list(build: Build) -> None:
    raw = msg(
        "From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <jm@example.de>",
        'To: "Doe, John" <john@example.com>, plain@example.com,',
        "  =?iso-8859-1?q?Fran=E7ois?= <f@example.fr>",
        "Cc: Team: a@example.com, b@example.com;, after@example.com",
        "Bcc: undisclosed-recipients:;",
        "Reply-To: <reply@example.com>",
        "Sender: sender@example.com",
    )
    data = build(raw)
    assert data["from"] == [{"name": "Jörg Müller", "address": "jm@example.de"}]
    assert data["to"] == [
        {"name": "Doe, John", "address": "john@example.com", "mailbox_hash": None},
        {"name": None, "address": "plain@example.com", "mailbox_hash": None},
        {"name": "François", "address": "f@example.fr", "mailbox_hash": None},
    ]
    assert [a["address"] for a in data["cc"]] == [
        "a@example.com",
        "b@example.com",
        "after@example.com",
    ]
    assert data["bcc"] == []
    assert data["reply_to"] == [{"name": None, "address": "reply@example.com"}]
    assert data["sender"] == [{"name": None, "address": "sender@example.com"}]
    assert data["parse_errors"] == []


def test_missing_address_headers_are_empty_lists(build: Build) -> None:
    data = build(msg("Subject: x"))
    for key in ("from", "sender", "reply_to", "to", "cc", "bcc"):
        assert data[key] == []


def test_broken_address_list_salvages_what_it_can(build: Build) -> None:
    data = build(msg('To: <<<, good@example.com, @@@ ,,, "unterminated <x@y'))
    assert {"name": None, "address": "good@example.com", "mailbox_hash": None} in data["to"]


def test_address_header_with_nothing_usable_is_reported(build: Build) -> None:
    data = build(msg("From: <<<>>>"))
    assert any("From header" in e for e in data["parse_errors"])


def test_repeated_address_headers_parse_and_report_the_same_every_time(build: Build) -> None:
    """Address lists are remembered between messages (one mailbox's To: repeats); a repeat
    must give the same addresses and the same parse errors as the first sight, long values
    included (those are not remembered)."""
    long_to = "To: " + ", ".join(f"=?utf-8?q?N=C3=BC{i}?= <u{i}@example.com>" for i in range(60))
    raws = [
        msg("From: <<<>>>", "To: =?utf-8?B?####?= <x@example.com>", long_to, body=f"{i}\r\n")
        for i in range(3)
    ]
    first, *repeats = (build(r) for r in raws)
    assert len(first["to"]) == 61 and first["to"][-1]["name"] == "Nü59"
    assert any("From header" in e for e in first["parse_errors"])
    assert len(first["parse_errors"]) >= 2  # the broken B word is reported too
    for data in repeats:
        for key in ("from", "to", "parse_errors"):
            assert data[key] == first[key]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 1 Jan 2024 10:00:00 +0100", "2024-01-01T10:00:00+01:00"),
        ("1 Jan 2024 10:00 -0530", "2024-01-01T10:00:00-05:30"),
        ("Tue, 2 Jan 24 08:00:00 GMT", "2024-01-02T08:00:00+00:00"),
        ("Tue, 2 Jan 2024 08:00:00 -0000", "2024-01-02T08:00:00+00:00"),
        ("Tue, 2 Jan 2024 08:00:00 EST", "2024-01-02T08:00:00-05:00"),
    ],
)
def test_dates_become_rfc3339(build: Build, value: str, expected: str) -> None:
    data = build(msg(f"Date: {value}"))
    assert data["date"] == expected
    assert data["parse_errors"] == []


def test_missing_date_is_null_without_error(build: Build) -> None:
    data = build(msg("Subject: x"))
    assert data["date"] is None
    assert data["parse_errors"] == []


@pytest.mark.parametrize(
    "value", ["yesterday-ish", "Mon, 45 Foo 2024 99:99:99 +0100", "Mon, 1 Jan 0 10:00:00 +9999"]
)
def test_garbage_date_is_null_with_error(build: Build, value: str) -> None:
    data = build(msg(f"Date: {value}"))
    assert data["date"] is None
    assert any("Date header" in e for e in data["parse_errors"])


def test_headers_in_order_decoded_and_duplicates_kept(build: Build) -> None:
    raw = msg(
        "Received: from a",
        "Received: from b\r\n\tby c",
        "Subject: =?utf-8?q?caf=C3=A9?=",
        "X-Dup: 1",
        "X-Dup: 2",
    )
    data = build(raw)
    assert [(h["name"], h["value"]) for h in data["headers"]] == [
        ("Received", "from a"),
        ("Received", "from b\tby c"),
        ("Subject", "café"),
        ("X-Dup", "1"),
        ("X-Dup", "2"),
    ]


def test_8bit_header_junk_is_replaced_and_reported(build: Build) -> None:
    raw = b"Subject: caf\xe9 \xff\r\nX-Ok: fine\r\n\r\nbody"
    data = build(raw)
    assert data["subject"] == "caf\ufffd \ufffd"
    assert any("Subject header" in e for e in data["parse_errors"])


def test_raw_utf8_headers_are_fine(build: Build) -> None:
    data = build("Subject: Grüße 日本\r\nFrom: Jörg <j@example.de>\r\n\r\nx".encode())
    assert data["subject"] == "Grüße 日本"
    assert data["from"] == [{"name": "Jörg", "address": "j@example.de"}]
    assert data["parse_errors"] == []


def test_ids_and_references(build: Build) -> None:
    raw = msg(
        "Message-ID: <m1@example.com>",
        "In-Reply-To: <p@example.com>",
        "References: <a@example.com>\r\n <b@example.com> <p@example.com>",
    )
    data = build(raw)
    assert data["message_id"] == "<m1@example.com>"
    assert data["in_reply_to"] == "<p@example.com>"
    assert data["references"] == ["<a@example.com>", "<b@example.com>", "<p@example.com>"]


def test_absent_ids_are_null(build: Build) -> None:
    data = build(msg("Subject: x"))
    assert data["message_id"] is None
    assert data["in_reply_to"] is None
    assert data["references"] == []
    assert data["subject"] == "x"
    assert build(msg("From: a@b.c"))["subject"] is None


# --- the plain address lists read without the stdlib parser (`_headers._plain_addresses`) -----

_ADDRESS_PIECES = [
    "a",
    "Z",
    "0",
    ".",
    "-",
    "_",
    "+",
    "=",
    "?",
    "'",
    "/",
    "é",
    " ",
    "\t",
    "@",
    ",",
    "<",
    ">",
    '"',
    "\\",
    "(",
    ")",
    ":",
    ";",
    "[",
    "]",
    "=?utf-8?B?w6k=?=",
    "x.y",
    "@x.test",
    "\x1c",
    "a@b",
    "<a@b>",
    '"N" ',
    "N ",
]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_ADDRESS_PIECES), max_size=24).map("".join))
def test_plain_address_lists_read_as_the_stdlib_reads_them(text: str) -> None:
    from email.utils import getaddresses

    from bridge.mail._headers import _plain_addresses

    plain = _plain_addresses(text)
    if plain is not None:
        assert plain == tuple(getaddresses([text]))


_NAME = st.sampled_from(
    [
        '"Alice Example"',
        '"Müller, Jörg"',
        '""',
        "Bob",
        "John Q. Public",
        "=?utf-8?B?w6k=?=",
        "=?utf-8?Q?J=C3=B6rg?= =?utf-8?Q?_M?=",
        "O'Neil",
    ]
)
_ADDR = st.sampled_from(["a@b.c", "first.last@example.com", "u+tag@x-y.test", "x=y?z@h", "A_1@D"])


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(st.one_of(st.none(), _NAME), _ADDR, st.sampled_from(["", " ", "\t "])),
        min_size=1,
        max_size=4,
    )
)
def test_ordinary_address_lists_take_the_plain_reading(
    entries: list[tuple[str | None, str, str]],
) -> None:
    from email.utils import getaddresses

    from bridge.mail._headers import _plain_addresses

    text = ",".join(
        f"{blank}{addr}{blank}" if name is None else f"{blank}{name}{blank}<{addr}>{blank}"
        for name, addr, blank in entries
    )
    if '"Müller, Jörg"' in text:  # a comma inside quotes: left to the stdlib parser
        assert _plain_addresses(text) is None
        return
    assert _plain_addresses(text) == tuple(getaddresses([text]))


def test_remembered_decodes_still_report_their_problems_every_time() -> None:
    from bridge.mail._headers import decode_words

    for where in ("Subject header", "To header", "Subject header"):
        errors: list[str] = []
        assert decode_words("=?utf-8?B?w6k=?= and =?utf-8?B?%%%?=", where, errors) == (
            "é and =?utf-8?B?%%%?="
        )
        assert errors == [f"{where}: an encoded word had invalid base64 and was kept as is"]
    errors = []
    assert decode_words("=?utf-8?B?w6k=?= x", "Subject header", errors) == "é x"
    assert decode_words("=?utf-8?B?w6k=?= x", "Subject header", errors) == "é x"
    assert errors == []

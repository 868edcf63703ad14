"""`header_keys`: the fingerprint and the Message-ID from one scan, equal to the two scans it
replaced on every input.

The fetch stage stores both with every message (the fingerprint for UIDL-migration checks,
the Message-ID for the custody trail's look-up); a value that changed with the rewrite would
make mail recorded before it look new after a migration, or lose it from a look-up. The
reference here is the previous code, kept verbatim: the plain scan (which the tests in
test_mail_fingerprint_scan.py hold to the parser) and `message_id`'s regex.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import mail
from bridge.mail import _fingerprint
from bridge.mail._mime import header_end
from bridge.testing.samples import generate_messages
from tests.support.headers import header_blocks

CORPUS = sorted((Path(__file__).resolve().parent.parent / "corpus" / "eml").glob("*.eml"))

# -- the previous scans (as of fa0e45b) ------------------------------------------------------
_OLD_ODD_BREAKS = re.compile(rb"[\x0b\x0c\x1c-\x1f]")
_OLD_PLAIN_BLOCK = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]+:[^\n]*\n(?:[ \t][^\n]*\n)*)*(?:\r?\n)?")
_OLD_WANTED_FIELD = re.compile(
    rb"^(message-id|date|from|subject):([^\n]*\n(?:[ \t][^\n]*\n)*)", re.IGNORECASE | re.MULTILINE
)
_OLD_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*([^\r\n]{1,998})", re.IGNORECASE | re.MULTILINE)


def _old_plain_fields(raw: bytes) -> list[bytes] | None:
    block = raw[: header_end(raw)]
    if block[-1:] != b"\n":
        block += b"\n"
    if (
        block.count(b"\r") != block.count(b"\r\n")
        or _OLD_ODD_BREAKS.search(block)
        or _OLD_PLAIN_BLOCK.fullmatch(block) is None
    ):
        return None
    values: dict[str, bytes] = {}
    for match in _OLD_WANTED_FIELD.finditer(block):
        key = match[1].lower().decode("ascii")
        if key not in values:
            values[key] = match[2]
    names = ("message-id", "date", "from", "subject")
    return [b" ".join(values[key].split()) if key in values else b"" for key in names]


def _old_message_id(raw: bytes) -> str | None:
    match = _OLD_MESSAGE_ID.search(raw, 0, header_end(raw))
    if match is None:
        return None
    value = match[1].strip().decode("ascii", "replace")
    return value or None


def _old_fingerprint(raw: bytes) -> str:
    plain = _old_plain_fields(raw)
    if plain is not None:
        return _fingerprint._digest(plain)
    return _fingerprint._parsed_fingerprint(raw)


def _check(raw: bytes) -> bool:
    """The new scan equals the old on `raw`; True when the plain scan took it."""
    old_fields = _old_plain_fields(raw)
    assert _fingerprint._plain_fingerprint_fields(raw) == old_fields, raw[:300]
    expected = (_old_fingerprint(raw), _old_message_id(raw))
    assert _fingerprint.header_keys(raw) == expected, raw[:300]
    assert (mail.fingerprint(raw), mail.message_id(raw)) == expected
    return old_fields is not None


# -- inputs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus(path: Path) -> None:
    _check(path.read_bytes())


def test_generated_mail_takes_the_one_scan() -> None:
    assert all(_check(raw) for raw in generate_messages(300, seed=3))


@pytest.mark.parametrize(
    ("block", "message_id"),
    [
        (b"Message-ID:\r\n <folded@x>\r\nMessage-ID: <second@x>\r\n\r\n", "<second@x>"),
        (b"Message-ID: \t \r\nMessage-ID: <second@x>\r\n\r\n", None),  # blank: no retry
        (b"message-id:<a@b>  \r\n\r\n", "<a@b>"),
        (b"Message-ID: <" + b"x" * 1200 + b">\r\n\r\n", "<" + "x" * 997),  # the 998 cap
        (b"Message-ID: <a@b>", "<a@b>"),  # no line end at all
        (b"Message-ID: <\xff@b>\n\n", "<\ufffd@b>"),
        (b"X-Message-ID: <no@x>\r\n\r\n", None),
        (b"Subject: a\rb\r\nMessage-ID: <bare-cr@x>\r\n\r\n", "<bare-cr@x>"),  # not plain
        (b"Subject: a\x1fb\r\nMessage-ID: <us@x>\r\n\r\n", "<us@x>"),  # not plain
    ],
)
def test_message_id_edges(block: bytes, message_id: str | None) -> None:
    _check(block)
    assert _fingerprint.header_keys(block)[1] == message_id


def test_header_block_at_the_caps() -> None:
    # Issue 19's shapes: a field of thousands of addresses, thousands of fields, lines far
    # over 998 octets, a value folded over many lines.
    to = b", ".join(b"u%d@example.com" % n for n in range(1500))
    many = b"".join(b"X-F%d: v\r\n" % n for n in range(3000))
    folded = b"Subject: a" + b"\r\n b" * 2000 + b"\r\n"
    for block in (
        b"From: a@b\r\nTo: " + to + b"\r\nMessage-ID: <m@x>\r\n\r\nbody",
        many + b"Message-ID: <late@x>\r\nDate: d\r\n\r\n",
        b"Subject: " + b"s" * 100_000 + b"\r\nMessage-ID: <" + b"i" * 5000 + b">\r\n\r\n",
        folded + b"Message-ID: <f@x>\r\n\r\n",
    ):
        assert _check(block)


_NAMES = st.sampled_from(
    ["Subject", "subject", "FROM", "From", "Date", "Message-ID", "message-id", "MESSAGE-ID"] * 3
    + ["X-Other", "Received", "From ", "Sub ject", "", " Subject", "X-Message-ID", "Message-ID "]
)
_VALUE_CHARS = st.sampled_from(
    ["a", "Z", " ", "\t", ":", "é", "=?utf-8?q?x?=", "<x@y>", "x" * 600] * 8
    + ["\r", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\x00", "\udcff"]
)
_VALUES = st.lists(_VALUE_CHARS, max_size=12).map("".join)


def _header_blocks() -> st.SearchStrategy[bytes]:
    return header_blocks(
        _NAMES,
        _VALUES,
        max_lines=10,
        eols=["\r\n", "\n", "\r\n", "\r"],
        ends=["\r\n", "\n", "", "\r\nbody\r\n", "\n\r\n", "\r\n\nMessage-ID: b"],
    )


@settings(max_examples=1500, deadline=None)
@given(_header_blocks())
def test_one_scan_equals_the_old_scans_on_generated_blocks(block: bytes) -> None:
    _check(block)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_one_scan_equals_the_old_scans_on_any_bytes(block: bytes) -> None:
    _check(block)


# -- the plain-block test ---------------------------------------------------------------------
# `_is_plain` replaced one pattern (as of 573d65f) that walked every byte of the block; it must
# accept exactly the blocks the pattern matched.
_PATTERN_PLAIN_BLOCK = re.compile(
    rb"(?:[\x21-\x39\x3b-\x7e]+:[^\r\n\x0b\x0c\x1c-\x1f]*\r?\n"
    rb"(?:[ \t][^\r\n\x0b\x0c\x1c-\x1f]*\r?\n)*)*(?:\r?\n)?"
)


def _check_plain(block: bytes) -> None:
    if block[-1:] != b"\n":
        block += b"\n"  # as `_plain_scan` hands it over
    expected = _PATTERN_PLAIN_BLOCK.fullmatch(block) is not None
    assert _fingerprint._is_plain(block) == expected, block[:300]


@pytest.mark.parametrize(
    "block",
    [
        b"\n",
        b"\r\n",
        b"\n\n",
        b"\r\n\n",
        b"\n\r\n",
        b"\r\r\n",
        b"A: x\n\n",
        b"A: x\r\n\r\n",
        b"A: x\n\nB: y\n",
        b"A: x\n\r\nB: y\n",
        b"A: x\n\n\n",
        b" A: x\n",
        b"A: x\n b\n\tc\n",
        b"A:\n",
        b"A: x\nB:",
        b"A: x\nB",
        b"A: x\n:\n",
        b"A: x\r",
        b"A: x\rB: y\n",
        b"A: x\x0b\n",
        b"A: \x7f\n",
        b"\x7f: x\n",
        b"A\x80: x\n",
        b"From x\n",
    ],
)
def test_plain_blocks_as_the_pattern_decided(block: bytes) -> None:
    _check_plain(block)


_PIECES = [b"\r\n", b"\n", b"\r", b"a", b" ", b"\t", b":", b"A:", b"From:", b"\x0b", b"\x1f"]
_PIECES += [b"\x7f", b"\x80", b"\x00", b"message-id:", b"\nSubject:"]


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(
        st.sampled_from(_PIECES),
        max_size=20,
    ).map(b"".join)
)
def test_plain_blocks_as_the_pattern_decided_on_pieces(block: bytes) -> None:
    _check_plain(block)
    _check(block)


@settings(max_examples=1000, deadline=None)
@given(_header_blocks())
def test_plain_blocks_as_the_pattern_decided_on_generated_blocks(block: bytes) -> None:
    _check_plain(block[: header_end(block)])

"""The fingerprint's header scan must give exactly the parser's values, or step aside.

`fingerprint()` first tries a plain scan of the header block (the fetch stage computes one per
message, and the parser made that most of the stage's cost). A scan that disagreed with the
parser would make a message fetched before and after an upgrade, or by RETR and by
`TOP n 0`, look like two different messages after a server migration: mail delivered twice.
So every input either scans to the parser's exact field values or is left to the parser.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import mail
from bridge.mail import _fingerprint
from bridge.mail._mime import header_end, parse_headers
from bridge.testing.samples import generate_messages
from tests.support.headers import header_blocks

CORPUS = sorted((Path(__file__).resolve().parent.parent / "corpus" / "eml").glob("*.eml"))


def _parser_fields(raw: bytes) -> list[bytes]:
    fields = _fingerprint._fingerprint_fields(parse_headers(raw))
    return [f.encode("utf-8", "surrogateescape") for f in fields]


def _parser_digest(raw: bytes) -> str:
    return _fingerprint._fingerprint_digest(_fingerprint._fingerprint_fields(parse_headers(raw)))


def _check(raw: bytes) -> bool:
    """True when the scan answered (and then it must equal the parser)."""
    scanned = _fingerprint._plain_fingerprint_fields(raw)
    if scanned is None:
        return False
    assert scanned == _parser_fields(raw), raw[:300]
    return True


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_scan_matches_parser(path: Path) -> None:
    raw = path.read_bytes()
    _check(raw)
    assert mail.fingerprint(raw) == _parser_digest(raw)


def test_generated_mail_takes_the_scan_and_matches() -> None:
    raws = list(generate_messages(300))
    assert all(_check(raw) for raw in raws)  # ordinary mail must not fall back to the parser


@pytest.mark.parametrize(
    "block",
    [
        b"From someone Mon Jan  1 00:00:00 2024\r\nSubject: x\r\n\r\n",  # mbox line
        b" folded first\r\nSubject: x\r\n\r\n",  # leading continuation
        b"Subject: a\rb\r\n\r\n",  # bare CR: a line break to the parser
        b"Subject: a\x0bb\r\n\r\n",  # VT: splitlines breaks there
        b"Subject: a\x1fb\r\n\r\n",  # US: whitespace to str.split only
        b"Subject : spaced name\r\n\r\n",  # not a field line: the parser's headers end
        b": no name\r\nSubject: x\r\n\r\n",
        b"not a header line\r\nSubject: x\r\n\r\n",
    ],
)
def test_unusual_blocks_are_left_to_the_parser(block: bytes) -> None:
    assert _fingerprint._plain_fingerprint_fields(block) is None
    assert mail.fingerprint(block) == _parser_digest(block)


def test_folding_8bit_and_repeats_match_the_parser() -> None:
    raw = (
        b"Received: by x\r\n\tfolded\r\n"
        b"SUBJECT:  caf\xc3\xa9\r\n  \t and more \r\n"
        b"subject: second one is ignored\r\n"
        b"Message-ID:\r\n <id@x>\r\n"
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\n"
        b"From:\t<a@b>\r\n"
        b"\r\nbody\r\n"
    )
    assert _check(raw)
    assert _fingerprint._plain_fingerprint_fields(raw) == [
        b"<id@x>",
        b"Mon, 1 Jan 2024 00:00:00 +0000",
        b"<a@b>",
        b"caf\xc3\xa9 and more",
    ]


_NAMES = st.sampled_from(
    ["Subject", "subject", "FROM", "From", "Date", "Message-ID", "message-id", "X-Other"] * 3
    + ["Received", "From ", "Sub ject", "", " Subject"]
)
# Mostly what real values hold; now and then a byte that breaks lines for the parser.
_VALUE_CHARS = st.sampled_from(
    ["a", "Z", " ", "\t", ":", "é", "=?utf-8?q?x?=", "<x@y>"] * 8
    + ["\r", "\n", "\r\n", "\x0b", "\x1c", "\x1f", "\x85", "\xa0", "\x00"]
)
_VALUES = st.lists(_VALUE_CHARS, max_size=12).map("".join)


def _header_blocks() -> st.SearchStrategy[bytes]:
    return header_blocks(
        _NAMES,
        _VALUES,
        max_lines=8,
        eols=["\r\n", "\n"],
        ends=["\r\n", "\n", "", "\r\nbody\r\n"],
    )


@settings(max_examples=400, deadline=None)
@given(_header_blocks())
def test_scan_equals_parser_on_generated_blocks(block: bytes) -> None:
    _check(block)
    assert mail.fingerprint(block) == _parser_digest(block)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b"a", b" ", b"\r\n\r\n", b"\n\n"])))
def test_header_end_is_the_first_blank_line_of_either_kind(pieces: list[bytes]) -> None:
    raw = b"".join(pieces)
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    assert header_end(raw) == (min(ends) + 2 if ends else len(raw))

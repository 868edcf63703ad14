"""The fast MIME path must build exactly the feed parser's tree, or step aside.

`bridge.mail._fastmime` builds the `Message` tree of ordinary mail from the bytes, without the
stdlib feed parser. Every field of the webhook payload is read from that tree, so a tree that
differed anywhere (a header value, a payload's last line end, a preamble) would change what a
receiver gets depending on which path a message took. Each check here therefore compares both
the trees and the whole payload (headers, addresses, text, html, attachments with their
content and hashes, helpdesk fields, parse_errors, the fingerprint, the big-attachment
contents) built with the fast path and with it switched off; and ordinary mail must take it.
"""

from __future__ import annotations

import base64
import os
import quopri
import tracemalloc
from email.message import Message
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import mail
from bridge.mail import _fastmime, _mime
from bridge.mail._helpdesk import MailOptions
from bridge.testing.samples import big_message, demo_messages, encode_word, generate_messages
from tests.mail.test_mail_set_aside import CASES as SET_ASIDE_CASES
from tests.mail.test_mail_set_aside import _mixed

CORPUS = sorted((Path(__file__).resolve().parent.parent / "corpus" / "eml").glob("*.eml"))
OPTIONS = MailOptions(trusted_authserv_ids=("mx.example.net",), trust_spam_headers=True)


def _tree(msg: Message) -> tuple[Any, ...]:
    """Everything of a parsed message the payload builder (or anyone) can read."""
    payload = msg._payload  # type: ignore[attr-defined]
    return (
        type(msg),
        msg.policy,
        msg._headers,  # type: ignore[attr-defined]
        msg._unixfrom,  # type: ignore[attr-defined]
        msg._charset,  # type: ignore[attr-defined]
        msg.preamble,
        msg.epilogue,
        [(type(d), str(d)) for d in msg.defects],
        msg.get_default_type(),
        [_tree(c) for c in payload] if isinstance(payload, list) else payload,
    )


def _stdlib_parse(raw: bytes) -> Message:
    with mock.patch.object(_fastmime, "parse", return_value=None):
        return _mime.parse(raw)


def _payload(raw: bytes, limit: int) -> tuple[dict[str, Any], str, list[Any]]:
    contents: list[mail.Content] = []
    data, digest = mail.build_message_data_and_fingerprint(
        raw, attachment_inline_limit=limit, include_raw=False, options=OPTIONS, contents=contents
    )
    return data, digest, [(c.index, c.size, b"".join(c.chunks(1000))) for c in contents]


def check(raw: bytes, *, limit: int = 1 << 20) -> bool:
    """Compare the fast path with the feed parser on `raw`; True if the fast path answered."""
    fast = _fastmime.parse(raw, _mime._POLICY)
    if fast is not None:
        assert _tree(fast) == _tree(_stdlib_parse(raw)), raw[:400]
    with_fast = _payload(raw, limit)
    with mock.patch.object(_fastmime, "parse", return_value=None):
        without = _payload(raw, limit)
    assert with_fast == without, raw[:400]
    return fast is not None


def test_the_parse_entry_point_uses_the_fast_path() -> None:
    # If `_mime.parse` stopped calling the fast path, every other test here would still pass
    # (both sides would run the feed parser); this one would not.
    raw = generate_messages(2)[1]
    with mock.patch.object(_mime, "FeedParser", side_effect=AssertionError("feed parser ran")):
        msg = _mime.parse(raw)
    assert msg.get_content_type() == "multipart/alternative"
    assert len(msg.get_payload()) == 2


# --- the corpora ------------------------------------------------------------------------------

# Corpus messages of ordinary shape: the fast path must answer for them (the rest may step aside).
ORDINARY = {
    "attachment-hostile-names.eml",
    "charset-aliases.eml",
    "multipart-alternative-qp.eml",
}


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_fast_path_equals_parser(path: Path) -> None:
    raw = path.read_bytes()
    taken = check(raw)
    if path.name in ORDINARY:
        assert taken, f"{path.name} is ordinary mail and must take the fast path"


def test_most_of_the_corpus_takes_the_fast_path() -> None:
    taken = [p.name for p in CORPUS if _fastmime.parse(p.read_bytes(), _mime._POLICY)]
    assert len(taken) >= len(CORPUS) // 2, taken


@pytest.mark.parametrize("size", [600, 5000, 40_000])
def test_generated_mail_takes_the_fast_path_and_matches(size: int) -> None:
    raws = generate_messages(120, seed=size, size=size)
    assert all(check(raw) for raw in raws)


def test_demo_and_big_messages_match() -> None:
    for raw in demo_messages():
        check(raw)
    # Over the inline limit and over the set-aside threshold of the feed parser's path.
    big = big_message(600_000)
    assert check(big, limit=10_000)
    assert check(big.replace(b"\r\n", b"\n"), limit=10_000)


@pytest.mark.parametrize("name", sorted(SET_ASIDE_CASES))
def test_long_base64_runs_match(name: str) -> None:
    # The feed parser's path sets these runs aside (tests/mail/test_mail_set_aside.py).
    check(SET_ASIDE_CASES[name], limit=1 << 10)


def test_big_attachment_parses_in_little_memory() -> None:
    blob = os.urandom(12 * 1024 * 1024)
    raw = _mixed(base64.encodebytes(blob).replace(b"\n", b"\r\n"))
    tracemalloc.start()
    try:
        msg = _fastmime.parse(raw, _mime._POLICY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert msg is not None
    assert peak < 1.3 * len(raw)  # the decoded payload strings, nothing line by line


def test_lf_only_mail_takes_the_fast_path() -> None:
    for raw in generate_messages(40, seed=7):
        assert check(raw.replace(b"\r\n", b"\n"))


# --- near misses, each of which the fast path must step aside for or get right ---------------

_BASE = (
    b"From: a@example.com\r\nTo: b@example.com\r\nSubject: s\r\n"
    b'Content-Type: multipart/mixed; boundary="XB"\r\n\r\n'
    b"preamble\r\n--XB\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    b"--XB\r\nContent-Type: application/pdf; name=a.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--XB--\r\nepilogue\r\n"
)

NEAR_MISSES = {
    "plain": (_BASE, True),
    "mbox line": (b"From x@y Mon Jan  1 00:00:00 2024\r\n" + _BASE, False),
    "leading continuation": (b" x\r\n" + _BASE, False),
    "no blank line": (b"Subject: x\r\nnot a header\r\nbody\r\n", False),
    "spaced name": (b"Subject : x\r\n\r\nbody\r\n", False),
    "empty name": (b": x\r\nSubject: x\r\n\r\nbody\r\n", False),
    "8-bit header": (b"Subject: caf\xc3\xa9\r\n\r\nbody\r\n", False),
    "NUL in header": (b"Subject: a\x00b\r\n\r\nbody\r\n", False),
    "VT in header": (b"Subject: a\x0bb\r\n\r\nbody\r\n", False),
    "bare CR in header": (b"Subject: a\rb\r\n\r\nbody\r\n", False),
    "bare CR in body": (b"Subject: a\r\n\r\nbo\rdy\r\n", True),
    "bare CR before delimiter": (_BASE.replace(b"hello\r\n", b"hello\r"), False),
    "delimiter ending in bare CR": (
        _BASE.replace(b"--XB\r\nContent-Type: app", b"--XB\rx\nContent-Type: app"),
        False,
    ),
    "no first delimiter": (_BASE.replace(b"--XB\r\n", b"--XC\r\n"), False),
    "close first": (_BASE.replace(b"preamble\r\n", b"preamble\r\n--XB--\r\n"), False),
    "no close": (_BASE.replace(b"--XB--", b"--XC--"), False),
    "delimiters in a row": (
        _BASE.replace(b"--XB\r\nContent-Type: app", b"--XB\r\n--XB\r\nContent-Type: app"),
        False,
    ),
    "delimiter with blanks": (
        _BASE.replace(b"--XB\r\nContent-Type: app", b"--XB \t\r\nContent-Type: app"),
        True,
    ),
    "close with blanks": (_BASE.replace(b"--XB--\r\n", b"--XB-- \r\n"), True),
    "close at end of input": (_BASE.split(b"--XB--")[0] + b"--XB--", True),
    "delimiter look-alike": (_BASE.replace(b"hello\r\n", b"hello\r\n--XBX\r\n--XB-\r\n"), True),
    "no epilogue": (_BASE.replace(b"epilogue\r\n", b""), True),
    "no preamble": (_BASE.replace(b"preamble\r\n", b""), True),
    "blank preamble": (_BASE.replace(b"preamble\r\n", b"\r\n"), True),
    "part without headers": (_BASE.replace(b"Content-Type: text/plain\r\n", b""), True),
    "part without blank line": (
        _BASE.replace(b"text/plain\r\n\r\nhello", b"text/plain\r\nhello"),
        False,
    ),
    "part header ends at delimiter": (_BASE.replace(b"\r\n\r\nhello\r\n", b"\r\n"), False),
    "no boundary": (_BASE.replace(b'; boundary="XB"', b""), False),
    "empty boundary": (_BASE.replace(b'boundary="XB"', b'boundary=""'), False),
    "RFC 2231 boundary": (_BASE.replace(b'boundary="XB"', b"boundary*=us-ascii''XB"), True),
    "boundary with colon": (_BASE.replace(b"XB", b"X:B"), True),
    "boundary with blanks": (_BASE.replace(b"XB", b"X B "), False),  # "--X B --" is no close
    "base64 multipart": (
        _BASE.replace(b"Subject: s\r\n", b"Subject: s\r\nContent-Transfer-Encoding: base64\r\n"),
        False,
    ),
    "digest": (_BASE.replace(b"multipart/mixed", b"multipart/digest"), False),
    "message/rfc822": (
        b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n",
        False,
    ),
    "empty message": (b"", False),
    "headers only, no blank line": (b"Subject: x\r\n", False),
    "headers only": (b"Subject: x\r\n\r\n", True),
    "no headers": (b"\r\nbody\r\n", True),
    "folded values": (
        b"Subject: a\r\n b\r\n\tc \r\nTo:\r\n x@y\r\nX-Empty:\r\nX-Blank:  \t \r\n\r\nbody",
        True,
    ),
    "outer delimiter inside inner": (
        b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n--o\r\n'
        b'Content-Type: multipart/alternative; boundary="i"\r\n\r\n--i\r\n\r\nx\r\n--o\r\n'
        b"\r\ny\r\n--i--\r\n--o--\r\n",
        False,
    ),
    "inner boundary starts with outer": (
        b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n--o\r\n'
        b'Content-Type: multipart/alternative; boundary="o-i"\r\n\r\n--o-i\r\n\r\nx\r\n'
        b"--o-i\r\n\r\ny\r\n--o-i--\r\n\r\n--o\r\n\r\nz\r\n--o--\r\n",
        True,
    ),
}


@pytest.mark.parametrize("name", sorted(NEAR_MISSES))
def test_near_misses(name: str) -> None:
    raw, fast = NEAR_MISSES[name]
    assert check(raw) is fast
    assert check(raw.replace(b"\r\n", b"\n")) in (fast, False)


# --- generated: the common shapes and their near misses ---------------------------------------

_NAMES = ("Subject", "X-Note", "Comments", "Keywords", "X-Mailer", "Thread-Topic")
_SAFE = [
    b"a",
    b"Z",
    b" ",
    b"\t",
    b":",
    b";",
    b"=",
    b"-",
    b"--",
    b"?",
    b'"',
    b"<",
    b">",
    b",",
    b"@",
    b".",
    b"=?utf-8?B?w6k=?=",
    b"=?iso-8859-1?Q?caf=E9?=",
    b"=?x?Q?bad",
]
# Ingredients the fast path must step aside for, or get right, wherever they land.
_HOSTILE = [b"\xe9", b"\x00", b"\r", b"\x0c", b"\x1c", b"From ", b"--B", b"--B--", b"\r\n", b"\n"]
_BOUNDARIES = [b"B", b"=_b.1", b"B-x", b"a b", b"B:1", b"B?x=1"]


def _text(draw: st.DrawFn, hostile: bool, body: bool = False) -> bytes:
    pool = _SAFE + _HOSTILE if hostile else _SAFE + ([b"\xe9", b"\x00", b"From "] if body else [])
    return b"".join(draw(st.lists(st.sampled_from(pool), max_size=12)))


def _header_block(draw: st.DrawFn, hostile: bool) -> bytes:
    lines: list[bytes] = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(_NAMES)).encode()
        lines.append(name + b":" + _text(draw, hostile) + b"\r\n")
        for _ in range(draw(st.integers(0, 2))):
            lines.append(draw(st.sampled_from([b" ", b"\t"])) + _text(draw, hostile) + b"\r\n")
    if hostile and draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), _text(draw, hostile) + b"\r\n")
    return b"".join(lines)


def _leaf(draw: st.DrawFn, hostile: bool, boundary: bytes) -> bytes:
    kind = draw(st.sampled_from(["plain", "html", "qp", "8bit", "attachment"]))
    lines = [_text(draw, hostile, body=True) for _ in range(draw(st.integers(0, 5)))]
    if hostile and draw(st.booleans()):
        ending = draw(st.sampled_from([b"", b"-", b"x", b"-- ", b" ", b"--"]))
        lines.insert(draw(st.integers(0, len(lines))), b"--" + boundary + ending)
    body = b"\r\n".join(lines)
    head = _header_block(draw, hostile) if draw(st.integers(0, 3)) == 0 else b""
    if kind in ("plain", "html", "8bit"):
        subtype = b"html" if kind == "html" else b"plain"
        charset = draw(st.sampled_from([b"utf-8", b"iso-8859-1", b"us-ascii", b'"UTF-8"']))
        cte = b"Content-Transfer-Encoding: 8bit\r\n" if kind == "8bit" else b""
        return (
            head
            + b"Content-Type: text/"
            + subtype
            + b"; charset="
            + charset
            + b"\r\n"
            + (cte + b"\r\n" + body)
        )
    if kind == "qp":
        encoded = quopri.encodestring(body.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
        return head + (
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + encoded
        )
    data = draw(st.binary(max_size=300))
    name = draw(st.sampled_from(["a.pdf", "résumé.pdf", "見積書.dat", "x y.txt"]))
    quoted = encode_word(name, "utf-8").replace("\r\n ", " ").encode()
    disposition = draw(st.sampled_from([b"attachment", b"inline", b""]))
    out = head + b'Content-Type: application/octet-stream; name="' + quoted + b'"\r\n'
    if disposition:
        out += b"Content-Disposition: " + disposition + b'; filename="' + quoted + b'"\r\n'
    if draw(st.booleans()):
        out += b"Content-ID: <c1@x>\r\n"
    out += b"Content-Transfer-Encoding: base64\r\n\r\n"
    return out + base64.encodebytes(data).replace(b"\n", b"\r\n")


def _multipart(
    draw: st.DrawFn, hostile: bool, subtype: bytes, boundary: bytes, parts: list[bytes]
) -> bytes:
    if hostile:
        delimiter_ends = [b"", b"", b" ", b"--", b"x"]
        close_ends = [b"--", b"--", b"-- ", b"", b"-"]
        preambles = [b"", b"MIME.\r\n", b"\r\n", b"--" + boundary + b"x\r\n", b"--" + boundary]
        ctes = [b"", b"7bit", b"base64", b"8bit"]
    else:
        delimiter_ends, close_ends = [b"", b" \t"], [b"--", b"-- "]
        preambles, ctes = [b"", b"This is MIME.\r\n", b"\r\n"], [b"", b"7bit", b"8bit"]
    delimiter = b"--" + boundary + draw(st.sampled_from(delimiter_ends)) + b"\r\n"
    close = b"--" + boundary + draw(st.sampled_from(close_ends))
    epilogue = draw(st.sampled_from([b"\r\n", b"", b"\r\nafter\r\n", b"\r\n\r\n"]))
    cte = draw(st.sampled_from(ctes))
    value = boundary
    if draw(st.booleans()) or b" " in boundary or b":" in boundary or b"?" in boundary:
        value = b'"' + boundary + b'"'
    head = b"Content-Type: multipart/" + subtype + b"; boundary=" + value + b"\r\n"
    if cte:
        head += b"Content-Transfer-Encoding: " + cte + b"\r\n"
    body = b"".join(delimiter + part + b"\r\n" for part in parts)
    return head + b"\r\n" + draw(st.sampled_from(preambles)) + body + close + epilogue


@st.composite
def messages(draw: st.DrawFn, hostile: bool) -> bytes:
    boundary = draw(st.sampled_from(_BOUNDARIES))
    shape = draw(st.sampled_from(["leaf", "alternative", "mixed", "mixed-alt"]))
    top = (
        b"From: =?utf-8?Q?J=C3=B6rg?= <j@example.com>\r\nTo: a@example.com, b@example.com\r\n"
        b"Subject: =?utf-8?B?w6k=?= hi\r\nDate: Mon, 1 Jan 2024 10:00:00 +0100\r\n"
        b"Message-ID: <m@x>\r\nMIME-Version: 1.0\r\n"
    ) + _header_block(draw, hostile)
    if shape == "leaf":
        return top + _leaf(draw, hostile, boundary)
    subtype = b"alternative" if shape == "alternative" else b"mixed"
    parts = [_leaf(draw, hostile, boundary) for _ in range(draw(st.integers(1, 3)))]
    if shape == "mixed-alt":
        inner = boundary + b"-alt"
        alt = [_leaf(draw, hostile, inner) for _ in range(draw(st.integers(1, 2)))]
        parts.insert(
            draw(st.integers(0, len(parts))), _multipart(draw, hostile, b"alternative", inner, alt)
        )
    return top + _multipart(draw, hostile, subtype, boundary, parts)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages(hostile=True),
    st.sampled_from(["crlf", "lf", "mixed"]),
    st.sampled_from([0, 50, 1 << 20]),
)
def test_generated_near_misses_equal_the_parser(raw: bytes, endings: str, limit: int) -> None:
    if endings == "lf":
        raw = raw.replace(b"\r\n", b"\n")
    elif endings == "mixed":
        raw = raw.replace(b"\r\n\r\n", b"\n\r\n", 1)
    check(raw, limit=limit)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(hostile=False), st.booleans(), st.sampled_from([0, 50, 1 << 20]))
def test_generated_common_shapes_take_the_fast_path(raw: bytes, lf: bool, limit: int) -> None:
    # A fast path that stepped aside for everything would pass the test above; ordinary
    # shapes must not be left to the feed parser.
    assert check(raw.replace(b"\r\n", b"\n") if lf else raw, limit=limit), raw[:600]


def test_the_parse_caps_run_before_the_fast_path() -> None:
    # A plain message the fast path would take, over the address cap (issue 19): it gets the
    # degraded payload, for which only the header block is read (its fields cut to the caps
    # before anything decodes them); the message itself is parsed by neither path.
    to = ", ".join(f"u{n}@example.com" for n in range(1500))
    raw = f"From: a@example.com\r\nTo: {to}\r\nSubject: many\r\n\r\nbody\r\n".encode()
    assert _fastmime.parse(raw, _mime._POLICY) is not None
    seen: list[bytes] = []
    real = _fastmime.parse

    def spy(data: bytes, policy: Any) -> Message | None:
        seen.append(data)
        return real(data, policy)

    with mock.patch.object(_fastmime, "parse", side_effect=spy):
        data = mail.build_message_data(raw, attachment_inline_limit=0, include_raw=False)
    assert seen and all(not block.endswith(b"body\r\n") for block in seen)
    assert "addresses (the limit is 1000)" in data["parse_errors"][0]
    assert data["raw"] is not None and data["text"] is None


@pytest.mark.parametrize(
    "text",
    [b"", b"=?" * 1000, b"=?" * 1001, b"?" * 5000, b"=?" * 1000 + b"?" * 10, b"x=?" * 1001 + b"=="],
)
def test_the_encoded_word_count_shortcut_agrees_with_counting(text: bytes) -> None:
    from bridge.mail._limits import MAX_ENCODED_WORDS, _at_most_words

    raw = b"Subject: x\r\n\r\n" + text
    assert _at_most_words(raw, 14, None) == (raw.count(b"=?", 14) <= MAX_ENCODED_WORDS)
    assert _at_most_words(raw, 0, 14) == (raw.count(b"=?", 0, 14) <= MAX_ENCODED_WORDS)


@pytest.mark.parametrize("n", [0, 1, 99, 100, 101, 500])
def test_the_semicolon_shortcut_agrees_with_counting(n: int) -> None:
    from bridge.mail._limits import MAX_PARAMETERS, _at_most_semicolons

    raw = b"A: b;c\r\n\r\n" + b"x;" * n + b";" * (n % 3)
    assert _at_most_semicolons(raw, 10) == (raw.count(b";", 10) <= MAX_PARAMETERS)


@pytest.mark.parametrize("name", ["Content-Type", "CONTENT-TYPE", "cOnTeNt-DiSpOsItIoN", "X-Other"])
@pytest.mark.parametrize("before", [b"", b"content-free text\r\n", b"Content-Language: en\r\n"])
def test_the_part_field_scan_finds_what_finditer_found(name: str, before: bytes) -> None:
    from bridge.mail import _limits

    params = b"; ".join(b"p%d=v" % i for i in range(150))
    styled = b'<p style="a: b; c: d; e: f">x</p>\r\n' * 60  # hundreds of ";" in the body
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        + before
        + name.encode()
        + b": text/plain; "
        + params
        + b"\r\n\r\n"
        + styled
        + b"--b--\r\n"
    )
    end = _mime.header_end(raw)
    reference = None
    for match in _limits._PART_FIELD.finditer(raw[end - 1 :].lower()):
        reason = _limits.field_over_limits(match[1].decode("ascii"), match[2])
        if reason is not None:
            reference = f"{reason} in a MIME part"
            break
    assert _limits.over_limits(raw, end) == reference
    assert (reference is None) == (name == "X-Other")

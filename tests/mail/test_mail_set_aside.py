"""Long base64 runs set aside during parsing: same payload as the plain stdlib parse, less memory.

`_mime.parse` replaces runs of 2,000+ base64-looking lines by a placeholder line before the feed
parser sees them and puts the text back afterwards. Every place a run can sit (an attachment,
the last lines before a boundary, preamble, epilogue, a text part, a nested message, a body
without headers, LF-only line ends, two runs in one part) must give exactly what the parser
gives without it.

Ordinary mail of these shapes no longer reaches the feed parser (`_fastmime` builds its tree;
tests/mail/test_mail_fast_parse.py compares it on these cases too), so the tests here switch
the fast path off to reach the set-aside code.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import tracemalloc

import pytest

import bridge.mail as mail
import bridge.mail._payload as payload_module
from bridge.mail import _fastmime, _mime


@pytest.fixture(autouse=True)
def _feed_parser_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fastmime, "parse", lambda raw, policy: None)


# Long enough to be a run, in a message big enough to be scanned for runs.
LINES = max(_mime._RUN_MIN_LINES, _mime._SCAN_MIN_BYTES // 70) + 37


def _b64(n_lines: int = LINES, seed: bytes = b"x", eol: bytes = b"\r\n") -> bytes:
    data = hashlib.shake_256(seed).digest(57 * n_lines)
    return base64.encodebytes(data).replace(b"\n", eol)


def _mixed(
    body: bytes, *, preamble: bytes = b"", epilogue: bytes = b"", eol: bytes = b"\r\n"
) -> bytes:
    text = (
        b"From: a@example.com\r\nSubject: big\r\nMessage-ID: <m@x>\r\n"
        b"Content-Type: multipart/mixed; boundary=ZZ\r\n\r\n"
        + preamble
        + b"--ZZ\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
        b"--ZZ\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="a.bin"\r\n\r\n'
        + body
        + b"--ZZ--\r\n"
        + epilogue
    )
    return text.replace(b"\r\n", eol)


CASES = {
    "attachment": _mixed(_b64()),
    "attachment, no CRLF before the boundary": _mixed(_b64()[:-2] + b"\r\n"),
    "two runs split by a short line": _mixed(_b64() + b"not base64!\r\n" + _b64(seed=b"y")),
    "run then more lines": _mixed(_b64() + b"QUJD\r\n" * 3),
    "preamble and epilogue": _mixed(_b64(seed=b"a"), preamble=_b64(seed=b"p"), epilogue=_b64()),
    "LF only": _mixed(_b64(eol=b"\n"), eol=b"\n"),
    "text part made of base64": (
        b"From: a@example.com\r\nContent-Type: text/plain\r\n\r\n" + _b64()
    ),
    "no headers at all": _b64(),
    "nested message": (
        b"From: a@example.com\r\nContent-Type: message/rfc822\r\n\r\n" + _mixed(_b64())
    ),
    "single part base64 without final newline": (
        b"From: a@example.com\r\nContent-Type: application/pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + _b64()[:-2]
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_same_payload_as_the_plain_parse(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = CASES[name]
    assert list(_mime._base64_runs(raw)), "the case must contain a long run"
    put_back = []
    real = _mime._put_back
    monkeypatch.setattr(_mime, "_put_back", lambda *a: put_back.append(1) or real(*a))
    for limit, include_raw in ((1 << 30, False), (1 << 10, True)):
        got = mail.build_message_data_and_fingerprint(
            raw, attachment_inline_limit=limit, include_raw=include_raw
        )
        assert put_back, "the run was not set aside, so this compared nothing"
        with monkeypatch.context() as m:
            m.setattr(payload_module, "parse", functools.partial(_mime.parse, set_aside=False))
            want = mail.build_message_data_and_fingerprint(
                raw, attachment_inline_limit=limit, include_raw=include_raw
            )
        assert got == want


def test_preamble_and_epilogue_are_restored() -> None:
    raw = CASES["preamble and epilogue"]
    plain = _mime.parse(raw, set_aside=False)
    aside = _mime.parse(raw)
    assert aside.preamble == plain.preamble and aside.epilogue == plain.epilogue
    assert len(aside.preamble or "") > 100_000
    assert "\x00" not in (aside.epilogue or "")


def test_a_placeholder_lookalike_in_the_message_is_left_alone() -> None:
    raw = _mixed(_b64()).replace(b"see attachment", b"\x00deadbeef:0\x00")
    data = mail.build_message_data(raw, attachment_inline_limit=0, include_raw=False)
    assert data["text"] == "\x00deadbeef:0\x00"


def test_large_attachment_parses_in_less_memory() -> None:
    blob = os.urandom(12 * 1024 * 1024)
    raw = _mixed(base64.encodebytes(blob).replace(b"\n", b"\r\n"))
    peaks = {}
    for set_aside in (False, True):
        tracemalloc.start()
        try:
            msg = _mime.parse(raw, set_aside=set_aside)
            _, peaks[set_aside] = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        del msg
    # The line list (about 1.6x the body) is gone: what is left is the joined body (1x).
    assert peaks[True] < 1.3 * len(raw) < peaks[False]

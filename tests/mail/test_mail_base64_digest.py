"""Big attachments that are not inlined are hashed chunk by chunk; the result must be exactly
what decoding the whole body gives, and anything unusual must fall back to the whole decode."""

from __future__ import annotations

import base64
import binascii
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bridge.mail as mail
from bridge.mail import _mime
from tests.mail.test_mail_set_aside import CASES


def _whole(text: str) -> tuple[int, str] | None:
    try:
        data = binascii.a2b_base64(text)
    except binascii.Error:
        return None
    return len(data), hashlib.sha256(data).hexdigest()


@settings(max_examples=400, deadline=None)
@given(
    data=st.binary(max_size=300),
    line=st.integers(min_value=1, max_value=80),
    eol=st.sampled_from(["\r\n", "\n"]),
    chunk=st.integers(min_value=1, max_value=40),
    tail=st.sampled_from(["", "=", "==", "===", "\r\n", "=\r\n", "A", "AB=", "====", "Q==="]),
    head=st.sampled_from(["", "=", "A", "\r\n", " "]),
)
def test_chunked_digest_equals_whole_decode(
    data: bytes, line: int, eol: str, chunk: int, tail: str, head: str
) -> None:
    encoded = base64.b64encode(data).decode()
    text = head + eol.join(encoded[i : i + line] for i in range(0, len(encoded), line)) + tail
    with pytest.MonkeyPatch.context() as m:
        m.setattr(_mime, "_STREAM_CHUNK", chunk)
        got = _mime._base64_digest(text, -1)
    if got is not None:
        assert got == _whole(text)


def test_junk_and_small_bodies_fall_back() -> None:
    body = base64.b64encode(b"x" * 3000).decode()
    assert _mime._base64_digest(body, 10) == (3000, hashlib.sha256(b"x" * 3000).hexdigest())
    assert _mime._base64_digest(body, 3000) is None  # would be inlined: needs the bytes
    assert _mime._base64_digest(body[:100] + "!" + body[100:], 10) is None
    assert _mime._base64_digest(body[:100] + "=" + body[100:], 10) is None
    assert _mime._base64_digest(body + "A", 10) is None


@pytest.mark.parametrize("limit", [0, 100])
def test_payloads_equal_with_and_without_the_chunked_path(
    limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    raws = [
        *CASES.values(),
        mail_with(base64.b64encode(b"\x00" * 5000).decode() + "\r\n"),
        mail_with("QUJD" * 500 + "!!\r\n"),  # junk: whole decode with a parse error
        mail_with("QUJD" * 500 + "Q\r\n"),  # truncated: whole decode with a parse error
    ]
    real = _mime._base64_digest
    calls: list[int] = []
    monkeypatch.setattr(_mime, "_base64_digest", lambda *a: calls.append(1) or real(*a))
    for raw in raws:
        calls.clear()
        monkeypatch.setattr(_mime, "_STREAM_MIN_CHARS", 0)
        got = mail.build_message_data(raw, attachment_inline_limit=limit, include_raw=False)
        monkeypatch.setattr(_mime, "_STREAM_MIN_CHARS", 1 << 62)
        want = mail.build_message_data(raw, attachment_inline_limit=limit, include_raw=False)
        assert got == want
        if b"Transfer-Encoding: base64" in raw and b"message/rfc822" not in raw:
            # (an embedded message is one attachment of its serialised bytes, not walked)
            assert calls, "the chunked path was not tried"


def mail_with(b64_body: str) -> bytes:
    return (
        "From: a@example.com\r\nContent-Type: application/octet-stream\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" + b64_body
    ).encode()

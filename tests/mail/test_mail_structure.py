from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import pytest

import bridge.mail as mail

Build = Callable[..., dict[str, Any]]

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
PDF = b"%PDF-1.4\n" + b"\x00\xff" * 300

NESTED = (
    b"From: a@example.com\r\n"
    b"Subject: nested\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"preamble is ignored\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="alt"\r\n'
    b"\r\n"
    b"--alt\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"plain version\r\n"
    b"--alt\r\n"
    b'Content-Type: multipart/related; boundary="rel"\r\n'
    b"\r\n"
    b"--rel\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b'<p>html <img src="cid:logo@x"></p>\r\n'
    b"--rel\r\n"
    b"Content-Type: image/png\r\n"
    b"Content-ID: <logo@x>\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n" + base64.encodebytes(PNG).replace(b"\n", b"\r\n") + b"--rel--\r\n"
    b"--alt--\r\n"
    b"--outer\r\n"
    b'Content-Type: application/pdf; name="report.pdf"\r\n'
    b"Content-Disposition: attachment;\r\n"
    b"  filename*0*=utf-8''R%C3%A9sum%C3%A9%20;\r\n"
    b'  filename*1="part two";\r\n'
    b"  filename*2=.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n" + base64.encodebytes(PDF) + b"--outer--\r\n"
    b"epilogue is ignored\r\n"
)


def test_nested_mixed_alternative_related(build: Build) -> None:
    data = build(NESTED)
    assert data["text"] == "plain version"
    assert data["html"] == '<p>html <img src="cid:logo@x"></p>'
    image, pdf = data["attachments"]
    assert image == {
        "filename": None,
        "content_type": "image/png",
        "disposition": "inline",
        "content_id": "logo@x",
        "size": len(PNG),
        "sha256": hashlib.sha256(PNG).hexdigest(),
        "content": base64.b64encode(PNG).decode(),
    }
    assert pdf["filename"] == "Résumé part two.pdf"
    assert pdf["disposition"] == "attachment"
    assert pdf["size"] == len(PDF)
    assert base64.b64decode(pdf["content"]) == PDF
    assert data["parse_errors"] == []


@pytest.mark.parametrize(
    ("limit", "inlined"), [(len(PDF), True), (len(PDF) - 1, False), (0, False)]
)
def test_inline_limit_is_inclusive_and_metadata_stays(
    build: Build, limit: int, inlined: bool
) -> None:
    pdf = build(NESTED, limit=limit)["attachments"][1]
    assert (pdf["content"] is not None) is inlined
    assert pdf["size"] == len(PDF)
    assert pdf["sha256"] == hashlib.sha256(PDF).hexdigest()


def test_alternative_prefers_last_of_each_kind(build: Build) -> None:
    raw = (
        b"Content-Type: multipart/alternative; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nfirst plain\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nsecond plain\r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n<b>html</b>\r\n"
        b"--b--\r\n"
    )
    data = build(raw)
    assert data["text"] == "second plain"
    assert data["html"] == "<b>html</b>"


def test_several_inline_text_parts_are_joined_in_order(build: Build) -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--b\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\n\xf0\xd2\xc9\xd7\xc5\xd4\r\n"
        b"--b\r\nContent-Type: text/plain\r\nContent-Disposition: inline\r\n\r\nfooter\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nlast\r\n"
        b"--b--\r\n"
    )
    data = build(raw)
    assert data["text"] == "hello\nПривет\nfooter\nlast"
    assert data["html"] is None
    assert data["attachments"] == []


def test_text_parts_with_filenames_or_attachment_disposition_are_attachments(
    build: Build,
) -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
        b'--b\r\nContent-Type: text/plain; name="notes.txt"\r\n\r\nfile one\r\n'
        b"--b\r\nContent-Type: text/html\r\nContent-Disposition: attachment\r\n\r\n<i>x</i>\r\n"
        b"--b--\r\n"
    )
    data = build(raw)
    assert data["text"] == "body"
    assert data["html"] is None
    names = [(a["filename"], a["content_type"], a["disposition"]) for a in data["attachments"]]
    assert names == [("notes.txt", "text/plain", "attachment"), (None, "text/html", "attachment")]
    assert base64.b64decode(data["attachments"][0]["content"]) == b"file one"


def test_message_rfc822_is_an_attachment_with_the_embedded_bytes(build: Build) -> None:
    inner = b"From: inner@example.com\r\nSubject: =?utf-8?q?inn=C3=A9r?=\r\n\r\ninner body\r\n"
    raw = (
        b"Subject: outer\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n"
        b'Content-Disposition: attachment; filename="fwd.eml"'
        b"\r\n\r\n" + inner + b"--b--\r\n"
    )
    data = build(raw)
    assert data["text"] == "see attached"
    (att,) = data["attachments"]
    assert att["content_type"] == "message/rfc822"
    assert att["filename"] == "fwd.eml"
    embedded = base64.b64decode(att["content"])
    assert att["size"] == len(embedded)
    assert att["sha256"] == hashlib.sha256(embedded).hexdigest()
    again = build(embedded)
    assert again["subject"] == "innér"
    assert again["from"] == [{"name": None, "address": "inner@example.com"}]
    assert again["text"].strip() == "inner body"


def test_8bit_rfc2231_and_2047_filenames(build: Build) -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b'--b\r\nContent-Type: application/octet-stream; name="=?utf-8?B?5pel5pys6Kqe?=.bin"\r\n'
        b"\r\nx\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="Gr\xc3\xbc\xc3\x9fe.txt"\r\n'
        b"\r\ny\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename*=iso-8859-1'de'%FCbung.txt\r\n"
        b"\r\nz\r\n"
        b"--b--\r\n"
    )
    data = build(raw)
    assert [a["filename"] for a in data["attachments"]] == ["日本語.bin", "Grüße.txt", "übung.txt"]


def test_include_raw_roundtrips(build: Build) -> None:
    data = build(NESTED, include_raw=True)
    assert base64.b64decode(data["raw"]) == NESTED
    assert build(NESTED)["raw"] is None


def test_invalid_base64_and_wrong_cte_are_reported(build: Build) -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\naGVsbG8gd29y\r\n"  # truncated: "hello wor" is 9 bytes, fine; next adds junk
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\naGVsbG8*gd29ybGQ\r\n"
        b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\nThis is not base64 at all, it is plain text!\r\n"
        b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-rot13\r\n"
        b"\r\nuryyb\r\n"
        b"--b--\r\n"
    )
    data = build(raw)
    first, second = data["attachments"]
    assert base64.b64decode(first["content"]) == b"hello wor"
    assert base64.b64decode(second["content"]) == b"hello world"
    assert "This is not base64 at all, it is plain text!" in data["text"]
    assert "uryyb" in data["text"]
    errors = " | ".join(data["parse_errors"])
    assert "non-base64 characters" in errors
    assert "declared base64 but is not base64" in errors
    assert "x-rot13" in errors


def test_metadata_only_has_full_shape(build: Build, check: Build) -> None:
    header_block = NESTED.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    data = mail.metadata_only(header_block, reason="message is 80 MB, over max_message_size 50 MB")
    check(data)
    assert data["subject"] == "nested"
    assert data["text"] is None and data["html"] is None
    assert data["attachments"] == [] and data["raw"] is None
    assert data["parse_errors"][0] == "message is 80 MB, over max_message_size 50 MB"
    full = build(NESTED)
    assert set(data) == set(full)
    assert data["headers"] == full["headers"]


def test_encoded_message_rfc822_is_decoded(build: Build) -> None:
    inner = b"Subject: inner\r\n\r\nencoded rfc822\r\n"
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(inner)
        + b"--b--\r\n"
    )
    (att,) = build(raw)["attachments"]
    assert base64.b64decode(att["content"]) == inner

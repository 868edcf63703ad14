"""Every corpus message becomes a schema-valid, encodable webhook body (format checks on)."""

from __future__ import annotations

import base64
import datetime as dt
import pathlib
from typing import Any

import jsonschema
import orjson
import pytest

import bridge.mail as mail

EML = pathlib.Path(__file__).with_name("eml")
FILES = sorted(EML.glob("*.eml"))
VALIDATOR = jsonschema.Draft202012Validator(
    mail.schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)
WHEN = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


def payload(raw: bytes, *, limit: int = 4096, include_raw: bool = False) -> dict[str, Any]:
    data = mail.build_message_data(raw, attachment_inline_limit=limit, include_raw=include_raw)
    body = mail.envelope(
        data, msg_id="msg_" + "c" * 32, account="corpus", uidl="u", size=len(raw), timestamp=WHEN
    )
    VALIDATOR.validate(body)
    assert orjson.loads(mail.encode(body)) == body
    return data


def test_corpus_is_big_enough_and_small_enough() -> None:
    assert len(FILES) >= 30
    assert sum(f.stat().st_size for f in FILES) < 2_000_000


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_every_corpus_file_is_a_valid_payload(path: pathlib.Path) -> None:
    raw = path.read_bytes()
    for limit, include_raw in ((0, False), (1 << 20, True)):
        data = payload(raw, limit=limit, include_raw=include_raw)
        if include_raw:
            assert base64.b64decode(data["raw"]) == raw
    meta = mail.metadata_only(raw[:65536], reason="over max_message_size")
    VALIDATOR.validate(
        mail.envelope(meta, msg_id="msg_" + "d" * 32, account="c", uidl="u", size=1, timestamp=WHEN)
    )
    assert len(mail.fingerprint(raw)) == 64


def load(name: str) -> dict[str, Any]:
    return payload((EML / name).read_bytes())


def errors_of(name: str) -> str:
    return " | ".join(load(name)["parse_errors"])


def test_nul_bytes_survive() -> None:
    data = load("nul-bytes.eml")
    assert "before\x00after" in data["text"]
    assert data["subject"] == "nul\x00subject"


def test_huge_header_block_keeps_every_header() -> None:
    data = load("header-block-10000-lines.eml")
    assert len(data["headers"]) == 10_003
    assert data["headers"][-1] == {"name": "X-Line-9999", "value": "value 9999"}
    assert data["text"].strip() == "body after a huge header block"


def test_lf_only_and_cr_only_messages() -> None:
    lf = load("lf-only.eml")
    assert lf["subject"] == "corpus" and lf["text"] == "line one\nline two\n"
    assert lf["date"] == "2024-01-01T10:00:00+00:00"
    assert load("cr-only.eml")["parse_errors"] is not None


def test_deep_nesting_degrades_with_a_reason() -> None:
    assert "nested deeper than" in errors_of("nested-200-levels.eml")
    deepest = load("nested-1500-levels.eml")
    assert deepest["subject"] == "corpus"  # header fields survive even if the parser gives up
    assert deepest["parse_errors"]


def test_broken_structure_keeps_the_text() -> None:
    assert "just text, no parts" in load("boundary-never-found.eml")["text"]
    assert "no boundary" in load("multipart-without-boundary.eml")["text"]
    missing_end = load("missing-boundary-end.eml")
    assert missing_end["text"] == "hello\nhello"
    assert missing_end["parse_errors"]


def test_encoding_problems_are_reported() -> None:
    assert "declared base64" in errors_of("invalid-base64.eml")
    assert "declared base64" in errors_of("wrong-cte.eml")
    assert "x-uuencode" in errors_of("unknown-cte.eml")
    assert "x-klingon" in errors_of("unknown-charset.eml")
    junk = load("eight-bit-junk-headers.eml")
    assert "\ufffd" in junk["subject"] and junk["parse_errors"]


def test_garbage_dates_are_null() -> None:
    for name in ("garbage-date.eml", "impossible-date.eml"):
        data = load(name)
        assert data["date"] is None
        assert any("Date header" in e for e in data["parse_errors"])


def test_inline_image_and_pdf() -> None:
    data = load("inline-image-and-pdf.eml")
    gif, pdf = data["attachments"]
    assert (gif["disposition"], gif["content_id"]) == ("inline", "img1@x")
    assert (pdf["filename"], pdf["content_type"]) == ("doc.pdf", "application/pdf")
    assert pdf["content"] is not None and pdf["size"] == 9 + 1024


def test_many_parts_all_joined() -> None:
    assert load("many-parts.eml")["text"] == "\n".join(["hello"] * 2000)

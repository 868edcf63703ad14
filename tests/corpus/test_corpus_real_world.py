"""What the real-world corpus additions must come out as (beyond being schema-valid, which
test_corpus.py checks for every file): the decoded content, not just "no crash"."""

from __future__ import annotations

from tests.corpus.make_corpus import CHARSET_ALIASES
from tests.corpus.test_corpus import load


def test_mbox_from_line_is_not_a_header_and_body_from_lines_stay() -> None:
    data = load("mbox-from-line.eml")
    assert data["subject"] == "corpus" and data["from"][0]["address"] == "sender@example.com"
    assert data["text"] == (
        "quoted mbox line follows\n>From the archive\nFrom a line that was not quoted\n"
    )


def test_raw_utf8_headers_rfc6532() -> None:
    data = load("utf8-headers-rfc6532.eml")
    assert data["subject"] == "Grüße — 你好 🎉"
    assert data["from"] == [{"name": "Zoë Ünïcode", "address": "zoë@exämple.com"}]
    assert data["to"] == [{"name": "日本", "address": "user@例え.jp", "mailbox_hash": None}]
    assert data["message_id"] == "<ü@example.com>"
    assert data["parse_errors"] == []


def test_charset_aliases_decode_to_the_original_text() -> None:
    data = load("charset-aliases.eml")
    assert data["text"].splitlines() == [text for _cs, _codec, text in CHARSET_ALIASES]
    assert data["parse_errors"] == []


def test_deeply_nested_message_rfc822_keeps_outer_headers_and_the_inner_bytes() -> None:
    data = load("nested-message-rfc822-60.eml")
    assert data["subject"] == "wrapper 59"
    (inner,) = data["attachments"]
    assert inner["content_type"] == "message/rfc822" and inner["size"] > 4000


def test_header_folding_abuse_is_reported_and_nothing_is_dropped() -> None:
    data = load("header-folding-abuse.eml")
    assert data["from"][0]["address"] == "sender@example.com"
    errors = " | ".join(data["parse_errors"])
    assert "continuation line as its first header line" in errors
    assert "no colon" in errors
    # Python's parser ends the header block at the colon-less line; the rest is kept as text.
    assert "X-Fold-Before-Colon" in data["text"] and data["text"].endswith("body\n")


def test_base64_with_junk_is_decoded_with_a_note() -> None:
    data = load("base64-junk.eml")
    (att,) = data["attachments"]
    assert att["filename"] == "a.bin"
    assert any("non-base64" in e for e in data["parse_errors"])


def test_lines_at_and_over_998_octets_survive() -> None:
    data = load("long-lines-998-plus.eml")
    headers = {h["name"]: h["value"] for h in data["headers"]}
    assert len(headers["X-Exactly-998"]) == 998 - 15 and len(headers["X-Over"]) == 5000
    assert data["text"] == "z" * 998 + "\n" + "w" * 999 + "\n"


def test_boundary_edge_cases_follow_rfc_2046() -> None:
    # First boundary parameter wins; "--abc" is not a delimiter for "ab"; a delimiter line may
    # carry trailing whitespace (transport padding).
    assert load("boundary-edge-cases.eml")["text"] == "first\n--abc\n\nsecond"


def test_hostile_attachment_names_are_passed_as_data() -> None:
    names = [a["filename"] for a in load("attachment-hostile-names.eml")["attachments"]]
    assert names[:2] == ["../../etc/passwd", "<script>alert(1)</script>.html"]
    assert "\r" not in names[2] and "\n" not in names[2]

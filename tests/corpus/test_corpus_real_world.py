"""What the real-world corpus additions must come out as (beyond being schema-valid, which
test_corpus.py checks for every file): the decoded content, not just "no crash"."""

from __future__ import annotations

from typing import Any

import bridge.mail as mail
from tests.corpus.make_corpus import CHARSET_ALIASES
from tests.corpus.test_corpus import EML, VALIDATOR, WHEN, load


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


TRUSTING = mail.MailOptions(trusted_authserv_ids=("mx.example.com",), trust_spam_headers=True)


def _helpdesk(name: str, options: mail.MailOptions = TRUSTING) -> dict[str, Any]:
    raw = (EML / name).read_bytes()
    data = mail.build_message_data(
        raw, attachment_inline_limit=0, include_raw=False, options=options
    )
    msg_id = "msg_" + "e" * 32
    body = mail.envelope(data, msg_id=msg_id, account="c", uidl="u", size=1, timestamp=WHEN)
    VALIDATOR.validate(body)
    return data


def test_helpdesk_fields_from_the_providers_headers() -> None:
    data = _helpdesk("helpdesk-provider-headers.eml")
    assert data["parse_errors"] == []
    assert data["reply_text"] == "Still broken after the update."
    assert data["original_recipient"] == "support+case-7@example.com"
    assert data["mailbox_hash"] == "case-7"
    assert [a["mailbox_hash"] for a in data["to"] + data["cc"]] == ["case-7", "urgent"]
    # The forged results below the sender's DKIM-Signature (bank.example) are not used.
    assert data["auth"] == {
        "authserv_id": "mx.example.com",
        "spf": {"result": "pass", "domain": "example.org"},
        "dkim": [{"result": "pass", "domain": "example.org", "selector": "k1"}],
        "dmarc": {"result": "pass", "domain": "example.org"},
        "arc": {"result": "none"},
    }
    assert data["spam"] == {"score": 0.4, "is_spam": False, "status": "No, score=0.4 required=5.0"}
    assert data["auto_submitted"] is False
    untrusting = _helpdesk("helpdesk-provider-headers.eml", mail.DEFAULT_OPTIONS)
    assert untrusting["auth"] is None and untrusting["spam"] is None


def test_malformed_helpdesk_headers_are_parse_errors_and_nulls() -> None:
    data = _helpdesk("helpdesk-malformed.eml")
    errors = " | ".join(data["parse_errors"])
    assert data["original_recipient"] is None
    assert "Delivered-To header: no address could be read" in errors
    assert "X-Original-To header: no address could be read" in errors
    assert data["auth"] is None and "Authentication-Results header" in errors
    assert data["spam"] == {"score": None, "is_spam": None, "status": "Maybe, score=lots"}
    assert "X-Spam-Score header" in errors
    assert data["reply_text"] is None  # the text is only a quote
    assert data["mailbox_hash"] is None
    assert data["auto_submitted"] is True  # anything but "no" is automatic


def test_every_corpus_file_is_valid_with_every_helpdesk_option_on() -> None:
    """Hostile headers meet the auth/spam parsers only when an account trusts its provider."""
    options = mail.MailOptions(
        mailbox_hash_separator="-",
        trusted_authserv_ids=("mx.example.com", "example.com"),
        trust_spam_headers=True,
    )
    for path in sorted(EML.glob("*.eml")):
        _helpdesk(path.name, options)

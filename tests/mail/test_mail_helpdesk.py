"""The helpdesk fields: reply_text, mailbox_hash, original_recipient, auth, spam, auto_submitted.

Quoting samples follow what each mailer writes (attribution wording and layout per client and
language); every one must give exactly the new text.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bridge.mail as mail
from bridge.mail._reply import reply_text

VALIDATOR = jsonschema.Draft202012Validator(
    mail.schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)
GOOGLE = mail.MailOptions(trusted_authserv_ids=("mx.google.com",), trust_spam_headers=True)


def build(raw: bytes, options: mail.MailOptions = mail.DEFAULT_OPTIONS) -> dict[str, Any]:
    data = mail.build_message_data(
        raw, attachment_inline_limit=4096, include_raw=False, options=options
    )
    body = mail.envelope(
        data,
        msg_id="msg_" + "a" * 32,
        account="a",
        uidl="u",
        size=len(raw),
        timestamp=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    VALIDATOR.validate(body)
    assert mail.encode(body)
    return data


NEW = "Thanks, that fixed it.\nSee you Monday."

REPLIES = {
    "gmail-en": f"{NEW}\n\nOn Tue, Mar 3, 2026 at 10:01 AM Bob Smith <bob@example.com> wrote:\n"
    "> Did the update fix it?\n>\n> Bob\n",
    "gmail-en-wrapped": f"{NEW}\n\nOn Tue, Mar 3, 2026 at 10:01 AM Bob Smith with a long name <\n"
    "bob@example.com> wrote:\n\n> Did the update fix it?\n",
    "gmail-de": f"{NEW}\n\nAm Di., 3. März 2026 um 10:01 Uhr schrieb Bob Smith <"
    "bob@example.com>:\n\n> Hat das Update geholfen?\n",
    "gmail-fr": f"{NEW}\n\nLe mar. 3 mars 2026 à 10:01, Bob Smith <bob@example.com> a écrit :\n\n"
    "> La mise à jour a-t-elle aidé ?\n",
    "gmail-es": f"{NEW}\n\nEl mar, 3 mar 2026 a las 10:01, Bob Smith (<bob@example.com>) "
    "escribió:\n\n> ¿Funcionó la actualización?\n",
    "gmail-ja": f"{NEW}\n\n2026年3月3日(火) 10:01 Bob Smith <bob@example.com>:\n\n"
    "> 更新で直りましたか？\n",
    "outlook-desktop-en": f"{NEW}\n\nFrom: Bob Smith <bob@example.com>\n"
    "Sent: Tuesday, March 3, 2026 10:01 AM\nTo: Alice <alice@example.com>\n"
    "Subject: RE: Update\n\nDid the update fix it?\n",
    "outlook-desktop-de": f"{NEW}\n\nVon: Bob Smith <bob@example.com>\n"
    "Gesendet: Dienstag, 3. März 2026 10:01\nAn: Alice <alice@example.com>\n"
    "Betreff: AW: Update\n\nHat das Update geholfen?\n",
    "outlook-desktop-fr": f"{NEW}\n\nDe : Bob Smith <bob@example.com>\n"
    "Envoyé : mardi 3 mars 2026 10:01\nÀ : Alice <alice@example.com>\nObjet : RE: Update\n\n"
    "La mise à jour a-t-elle aidé ?\n",
    "outlook-desktop-es": f"{NEW}\n\nDe: Bob Smith <bob@example.com>\n"
    "Enviado: martes, 3 de marzo de 2026 10:01\nPara: Alice <alice@example.com>\n"
    "Asunto: RE: Update\n\n¿Funcionó?\n",
    "outlook-desktop-ja": f"{NEW}\n\n差出人: Bob Smith <bob@example.com>\n"
    "送信日時: 2026年3月3日 10:01\n宛先: Alice <alice@example.com>\n件名: RE: Update\n\n"
    "直りましたか？\n",
    "outlook-web": f"{NEW}\n\n________________________________\nFrom: Bob Smith "
    "<bob@example.com>\nSent: Tuesday, March 3, 2026 10:01\nTo: Alice\nSubject: Update\n\n"
    "Did it?\n",
    "outlook-original-message": f"{NEW}\n\n-----Original Message-----\nFrom: Bob\nSent: today\n\n"
    "Did it?\n",
    "apple-mail": f"{NEW}\n\n> On 3 Mar 2026, at 10:01, Bob Smith <bob@example.com> wrote:\n>\n"
    "> Did the update fix it?\n",
    "apple-mail-de": f"{NEW}\n\n> Am 03.03.2026 um 10:01 schrieb Bob Smith <bob@example.com>:\n"
    ">\n> Hat das Update geholfen?\n",
    "thunderbird-en": f"{NEW}\n\nOn 03/03/2026 10:01, Bob Smith wrote:\n> Did it?\n",
    "thunderbird-de": f"{NEW}\n\nAm 03.03.26 um 10:01 schrieb Bob Smith:\n> Geht es?\n",
    "thunderbird-fr": f"{NEW}\n\nLe 03/03/2026 à 10:01, Bob Smith a écrit :\n> Ça va ?\n",
    "thunderbird-es": f"{NEW}\n\nEl 3/3/26 a las 10:01, Bob Smith escribió:\n> ¿Va?\n",
    "thunderbird-ja": f"{NEW}\n\nOn 2026/03/03 10:01, Bob Smith wrote:\n> 直りましたか？\n",
    "k9-en": f"{NEW}\n\nOn March 3, 2026 10:01:23 AM GMT+01:00, Bob Smith <bob@example.com> "
    "wrote:\n>Did it?\n",
    "k9-de": f"{NEW}\n\nAm 3. März 2026 10:01:23 MEZ schrieb Bob Smith <bob@example.com>:\n"
    ">Geht es?\n",
    "k9-short": f"{NEW}\n\nBob Smith <bob@example.com> schrieb am 3. März 2026 10:01:23 MEZ:\n"
    ">Geht es?\n",
    "signature": f"{NEW}\n\n-- \nAlice Example\nACME Support\n\nOn Tue, 3 Mar 2026, Bob <b@x.org>"
    " wrote:\n> q\n",
    "mobile": f"{NEW}\n\nSent from my iPhone\n\nOn 3 Mar 2026, at 10:01, Bob <b@x.org> wrote:\n"
    "> q\n",
    "mobile-de": f"{NEW}\n\nVon meinem iPhone gesendet\n\n> Am 03.03.2026 um 10:01 schrieb "
    "Bob <b@x.org>:\n> q\n",
    "forwarded": f"{NEW}\n\n---------- Forwarded message ---------\nFrom: Bob <b@x.org>\n"
    "Date: Tue\n\nold\n",
    "top-posted-from-block": f"{NEW}\n\n*From:* Bob Smith [mailto:bob@example.com]\n"
    "*Sent:* Tuesday, March 3, 2026 10:01 AM\n*To:* Alice\n*Subject:* Update\n\nDid it?\n",
    "crlf": (f"{NEW}\n\nOn Tue, 3 Mar 2026 at 10:01, Bob <b@x.org> wrote:\n> q\n").replace(
        "\n", "\r\n"
    ),
}


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_reply_text_strips_history_and_signature(name: str) -> None:
    assert reply_text(REPLIES[name]) == NEW


def test_edited_quote_keeps_the_inline_answers() -> None:
    text = (
        "On Tue, 3 Mar 2026 at 10:01, Bob <b@x.org> wrote:\n"
        "> Does the update fix it?\n"
        "Yes, it does.\n"
        "\n"
        "> [... rest trimmed by me ...] And the printer?\n"
        "\n"
        "Still broken.\n"
        "\n"
        "> Bob\n"
    )
    assert reply_text(text) == "Yes, it does.\n\nStill broken."


def test_reply_text_is_null_when_it_cannot_tell() -> None:
    assert reply_text(None) is None
    assert reply_text("") is None
    assert reply_text("> only a quote\n> nothing new\n") is None
    assert reply_text("\n\n-- \nsignature only\n") is None


def test_a_colon_line_before_a_quote_is_not_an_attribution_without_a_date_or_verb() -> None:
    text = "As you said:\n> it works\nI agree.\n"
    assert reply_text(text) == "As you said:\nI agree."


def test_plain_message_is_its_own_reply_text() -> None:
    assert reply_text("Hello,\nplease call me.\n") == "Hello,\nplease call me."


def _message(*headers: str, body: str = "Hi\n") -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8")


def test_reply_text_in_the_payload() -> None:
    data = build(_message("From: a@b.c", "Subject: Re: x", body=REPLIES["gmail-de"]))
    assert data["reply_text"] == NEW


def test_mailbox_hash_top_level_and_per_recipient() -> None:
    raw = _message(
        "Delivered-To: support+ticket-42@example.com",
        "From: a@b.c",
        "To: Support <support+ticket-42@example.com>, plain@example.com",
        "Cc: team+ops@example.com",
    )
    data = build(raw)
    assert data["original_recipient"] == "support+ticket-42@example.com"
    assert data["mailbox_hash"] == "ticket-42"
    assert [a["mailbox_hash"] for a in data["to"]] == ["ticket-42", None]
    assert data["cc"][0]["mailbox_hash"] == "ops"
    dash = build(raw, mail.MailOptions(mailbox_hash_separator="-"))
    assert dash["mailbox_hash"] == "42"
    assert data["from"] == [{"name": None, "address": "a@b.c"}]  # From keeps its shape


def test_mailbox_hash_without_delivered_to_comes_from_to_then_cc() -> None:
    data = build(_message("From: a@b.c", "To: plain@example.com", "Cc: x+h1@example.com"))
    assert data["original_recipient"] is None and data["mailbox_hash"] == "h1"
    assert build(_message("From: a@b.c", "To: a@example.com"))["mailbox_hash"] is None


def test_original_recipient_order_of_trust_and_topmost_first() -> None:
    raw = _message(
        "X-Original-To: second@example.com",
        "Delivered-To: first@example.com",
        "Delivered-To: forged-lower@example.com",
        "Envelope-To: third@example.com",
        "From: a@b.c",
    )
    assert build(raw)["original_recipient"] == "first@example.com"
    raw = _message("X-Envelope-To: <env@example.com>", "From: a@b.c")
    assert build(raw)["original_recipient"] == "env@example.com"
    raw = _message("Envelope-To: one@example.com, two@example.com", "From: a@b.c")
    assert build(raw)["original_recipient"] == "one@example.com"


def test_malformed_delivered_to_is_a_parse_error_and_the_next_header_is_used() -> None:
    raw = _message("Delivered-To: not an address", "X-Original-To: ok@example.com")
    data = build(raw)
    assert data["original_recipient"] == "ok@example.com"
    assert any("Delivered-To header" in e for e in data["parse_errors"])
    data = build(_message("Delivered-To: <<<", "From: a@b.c"))
    assert data["original_recipient"] is None and data["parse_errors"]


GMAIL_TOP = (
    "Delivered-To: alice@gmail.com",
    "Received: by 2002:a05:6358:1234 with SMTP id x;        Tue, 3 Mar 2026 01:01:01 -0800",
    "X-Received: by 2002:a17:90a:1234 with SMTP id y",
    "ARC-Seal: i=1; a=rsa-sha256; t=1; cv=none; d=google.com; s=arc-20160816; b=abc",
    "ARC-Authentication-Results: i=1; mx.google.com; dkim=pass header.i=@example.com",
    "Return-Path: <bob@example.com>",
    "Received: from mail.example.com (mail.example.com. [192.0.2.1]) by mx.google.com",
    "Received-SPF: pass (google.com: domain of bob@example.com designates 192.0.2.1)",
    "Authentication-Results: mx.google.com;       dkim=pass header.i=@example.com "
    "header.s=s1 header.b=abc;       arc=pass (i=1);       spf=pass (google.com: ok) "
    "smtp.mailfrom=bob@example.com;       dmarc=pass (p=REJECT) header.from=example.com",
    "X-Spam-Status: No, score=-1.5 required=5.0 tests=ALL_TRUSTED",
)


def test_auth_from_the_trusted_provider() -> None:
    data = build(
        _message(*GMAIL_TOP, "DKIM-Signature: v=1; d=example.com", "From: b@e.com"), GOOGLE
    )
    assert data["auth"] == {
        "authserv_id": "mx.google.com",
        "spf": {"result": "pass", "domain": "example.com"},
        "dkim": [{"result": "pass", "domain": "example.com", "selector": "s1"}],
        "dmarc": {"result": "pass", "domain": "example.com"},
        "arc": {"result": "pass"},
    }
    assert build(_message(*GMAIL_TOP, "From: b@e.com"))["auth"] is None  # nothing trusted


def test_forged_authentication_results_are_ignored() -> None:
    forged = "Authentication-Results: mx.google.com; dkim=pass header.d=bank.com; dmarc=pass"
    # Below the first header the provider did not add: the sender's own block.
    lower = _message(
        "Received: from x by mx.google.com",
        "DKIM-Signature: v=1",
        forged,
        "From: ceo@bank.com",
    )
    assert build(lower, GOOGLE)["auth"] is None
    # Directly under the provider's own (same id): the topmost one is the provider's.
    stacked = _message(
        "Received: from x by mx.google.com",
        "Authentication-Results: mx.google.com; dkim=fail header.d=bank.com; dmarc=fail",
        forged,
        "From: ceo@bank.com",
    )
    data = build(stacked, GOOGLE)
    assert data["auth"]["dmarc"]["result"] == "fail"
    assert data["auth"]["dkim"][0]["result"] == "fail"
    # Naming another authserv-id, at the very top: not the account's provider.
    other = _message(
        "Authentication-Results: evil.example; dkim=pass; dmarc=pass",
        "Received: from x by mx.google.com",
        "From: ceo@bank.com",
    )
    assert build(other, GOOGLE)["auth"] is None


def test_unparseable_trusted_results_are_a_parse_error_and_null() -> None:
    raw = _message("Authentication-Results: mx.google.com; dkim=", "From: a@b.c")
    data = build(raw, GOOGLE)
    assert data["auth"] is None
    assert any("Authentication-Results" in e for e in data["parse_errors"])


def test_spam_only_when_trusted_and_only_from_the_provider_block() -> None:
    raw = _message(*GMAIL_TOP, "From: b@e.com")
    assert build(raw)["spam"] is None
    spam = build(raw, GOOGLE)["spam"]
    assert spam == {
        "score": -1.5,
        "is_spam": False,
        "status": "No, score=-1.5 required=5.0 tests=ALL_TRUSTED",
    }
    flagged = _message("Received: by mx", "X-Spam-Flag: YES", "X-Spam-Score: 7.9", "From: a@b.c")
    assert build(flagged, GOOGLE)["spam"] == {"score": 7.9, "is_spam": True, "status": None}
    forged = _message("Received: by mx", "From: a@b.c", "X-Spam-Status: No, score=-100")
    assert build(forged, GOOGLE)["spam"] is None
    junk = _message("X-Spam-Score: lots", "From: a@b.c")
    data = build(junk, GOOGLE)
    assert data["spam"] == {"score": None, "is_spam": None, "status": None}
    assert any("X-Spam-Score" in e for e in data["parse_errors"])


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Auto-Submitted: auto-replied", True),
        ("Auto-Submitted: auto-generated; owner-email=x@y.z", True),
        ("Auto-Submitted: no", False),
        ("Auto-Submitted: No (a person wrote this)", False),
        ("Precedence: bulk", True),
        ("Precedence: list", True),
        ("Precedence: junk", True),
        ("Precedence: first-class", False),
        ("X-Autoreply: yes", True),
        ("X-Autorespond: Out of office", True),
        ("X-Auto-Response-Suppress: OOF", True),
        ("X-Auto-Response-Suppress: DR, RN", False),
        ("Return-Path: <>", True),
        ("Return-Path: <bob@example.com>", False),
        ("X-Mailer: Outlook", False),
    ],
)
def test_auto_submitted(header: str, expected: bool) -> None:
    assert build(_message(header, "From: a@b.c"))["auto_submitted"] is expected


def test_delivery_reports_are_auto_submitted() -> None:
    raw = _message(
        "From: MAILER-DAEMON@x.org",
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"',
        body="--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b--\r\n",
    )
    assert build(raw)["auto_submitted"] is True


def test_helpdesk_fields_come_after_the_existing_ones() -> None:
    data = build(_message("From: a@b.c", "To: x@y.z"))
    keys = list(data)
    assert keys[-7:] == ["parse_errors", *mail.HELPDESK_FIELDS]


def test_a_bug_in_one_field_is_a_parse_error_not_an_undeliverable_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bridge.mail._payload as payload

    def broken(*_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(payload, "original_recipient", broken)
    data = build(_message("Delivered-To: a+b@c.d", "From: a@b.c", "To: a+b@c.d"))
    assert data["original_recipient"] is None
    assert data["mailbox_hash"] == "b"  # falls back to To
    assert any("original_recipient could not be worked out" in e for e in data["parse_errors"])


def test_metadata_only_has_the_helpdesk_fields() -> None:
    data = mail.metadata_only(
        _message("Delivered-To: a+z@b.c", "From: x@y.z", "Auto-Submitted: auto-replied"),
        reason="too big",
        options=GOOGLE,
    )
    assert data["original_recipient"] == "a+z@b.c" and data["mailbox_hash"] == "z"
    assert data["reply_text"] is None and data["auto_submitted"] is True


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "",
                " ",
                "--",
                "-- ",
                "a",
                "Hi there",
                "de",
                "From",
                "x:",
                "> q",
                "Sent from my x",
                "\t",
                "On Mon, a@b wrote:",
                "Von: Bob",
                "Date: now",
                "____",
                "2026:",
                "________",
                "-----Original Message-----",
                "-----",
                "--x",
                "b >",
                "x_y-z",
            ]
        ),
        max_size=12,
    )
)
def test_the_fast_path_gives_what_the_line_rules_give(lines: list[str]) -> None:
    """Texts the gate lets through the text-level path come out as the per-line rules make
    them; the gate only ever skips rules that could not have matched."""
    from bridge.mail import _reply

    text = "\n".join(lines)
    slow_lines = text.split("\n")
    slow = _reply._tidy(
        "\n".join(
            _reply._drop_signature(
                _reply._drop_quotes(slow_lines[: _reply._history_start(slow_lines)])
            )
        )
    )
    if not _reply._may_have_history(text):
        assert _reply._tidy(_reply._cut_signature(text)) == slow
    assert reply_text(text) == (slow or None)

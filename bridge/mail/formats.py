"""Delivery formats: the standard payload re-shaped as the request Postmark, Mailgun or
SendGrid sends for inbound mail, so receivers written for those services take POP3 mail as is.

Every format is rendered from the standard body (`envelope(...)`'s dict) and, when the outbox
still has it, the raw message: one parse serves all formats, and the field-by-field mapping
(docs/formats.md) reads off the standard payload's documented fields. Rendering is pure and
deterministic in its inputs; the only input that changes between attempts is `now`, Mailgun's
`timestamp` (receivers check it is fresh), while its `token`, Postmark's `MessageID` and the
multipart boundaries derive from the message id and stay the same on every retry and replay.

What POP3 cannot give (the SMTP envelope, the sender's IP) is taken from the provider's
delivery headers or left out; docs/formats.md lists each case.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import uuid
from dataclasses import field
from email import policy as email_policy
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Literal

import orjson

from bridge.mail._form import Field, boundary_of, encode
from bridge.mail._helpdesk import mailbox_hash
from bridge.mail._mime import header_end
from bridge.records import record

if TYPE_CHECKING:
    from html.parser import HTMLParser

__all__ = ["FORMATS", "FormatOptions", "content_type_of", "render"]

FormatName = Literal["standard", "postmark", "mailgun", "sendgrid"]
FORMATS: tuple[FormatName, ...] = ("standard", "postmark", "mailgun", "sendgrid")

# Postmark's MessageID is a UUID; ours is a name-based one under this namespace.
_POSTMARK_NS = uuid.UUID("6f1d2c3e-5b4a-4e8f-9c7d-0a1b2c3d4e5f")
# Fields Postmark gives separately rather than in `Headers` (anymail adds them from those).
_POSTMARK_OWN = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "reply-to",
        "content-type",
        "content-transfer-encoding",
        "return-path",
    }
)


@record
class FormatOptions:
    """How one webhook shapes its requests (from `webhooks[]`)."""

    name: FormatName = "standard"
    # mailgun: the raw `body-mime` form; sendgrid: the raw `email` form.
    mime: bool = False
    # postmark: add RawEmail.
    include_raw: bool = False
    # mailgun: the key `signature` is an HMAC under.
    signing_key: str = field(default="", repr=False)

    @property
    def standard(self) -> bool:
        return self.name == "standard"


def content_type_of(body: bytes, default: str = "application/json") -> str:
    """The Content-Type a rendered body goes out with (a form carries its boundary)."""
    boundary = boundary_of(body)
    if boundary is None:
        return default
    return f"multipart/form-data; boundary={boundary}"


def render(options: FormatOptions, body: dict[str, Any], *, raw: bytes | None, now: float) -> bytes:
    """The request body of `options.name` for one standard webhook body.

    `raw` is the message as fetched (None when the outbox kept only the parsed payload: a
    message over max_message_size, or a proxy tap copy); then the raw forms are rebuilt as a
    MIME message from the payload. Attachments whose content the payload does not carry are
    left out (the standard payload says why in `parse_errors` or describes them).
    """
    data: dict[str, Any] = body["data"]
    if options.name == "postmark":
        return orjson.dumps(_postmark(data, raw, options))
    if options.name == "mailgun":
        return encode(_mailgun(data, raw, options, now), data["id"])
    if options.name == "sendgrid":
        return encode(_sendgrid(data, raw, options), data["id"])
    return orjson.dumps(body)


# ------------------------------------------------------------------------------- shared bits


def _display(entry: dict[str, Any]) -> str:
    name, address = entry.get("name"), entry.get("address") or ""
    if not name:
        return str(address)
    quoted = str(name).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{address}>'


def _display_list(entries: list[dict[str, Any]]) -> str:
    return ", ".join(_display(e) for e in entries)


def _header(data: dict[str, Any], name: str) -> str | None:
    lower = name.lower()
    return next((h["value"] for h in data["headers"] if h["name"].lower() == lower), None)


def _envelope_sender(data: dict[str, Any]) -> str:
    """Return-Path (the provider's record of MAIL FROM) without <>, else the From address."""
    path = _header(data, "Return-Path")
    if path is not None:
        return path.strip().strip("<>").strip()
    return str(data["from"][0]["address"]) if data["from"] else ""


def _recipient(data: dict[str, Any]) -> str:
    if data.get("original_recipient"):
        return str(data["original_recipient"])
    for key in ("to", "cc"):
        if data[key]:
            return str(data[key][0]["address"])
    return ""


def _files(data: dict[str, Any]) -> list[tuple[dict[str, Any], bytes]]:
    """Attachments with their decoded bytes (those the payload carries content for)."""
    out = []
    for attachment in data["attachments"]:
        if attachment.get("content") is None:
            continue
        out.append((attachment, base64.b64decode(attachment["content"])))
    return out


def _file_name(attachment: dict[str, Any], n: int) -> str:
    # Form parsers (Django's among them) drop file parts without a name: give one.
    return attachment.get("filename") or f"attachment-{n}"


def _raw_text(raw: bytes) -> str:
    # Form fields and JSON carry text. A message is ASCII or UTF-8 in practice; other 8-bit
    # bytes become U+FFFD, as on the services themselves.
    return raw.decode("utf-8", "replace")


def _mime(data: dict[str, Any], raw: bytes | None) -> str:
    """The raw message, or one rebuilt from the payload when the outbox no longer has it."""
    if raw is not None:
        return _raw_text(raw)
    if data.get("raw"):
        return _raw_text(base64.b64decode(data["raw"]))
    try:
        return _rebuild(data)
    except Exception:  # the modern generator refused something: keep what surely serialises
        return _rebuild({**data, "headers": [], "attachments": [], "html": None})


def _rebuild(data: dict[str, Any]) -> str:
    msg = EmailMessage(policy=email_policy.SMTP)
    skip = {"content-type", "content-transfer-encoding", "mime-version"}
    for header in data["headers"]:
        if header["name"].lower() in skip:
            continue
        with contextlib.suppress(Exception):  # one the modern policy refuses: left out
            msg[header["name"]] = header["value"]
    if data.get("text") is not None or data.get("html") is None:
        msg.set_content(data.get("text") or "")
    if data.get("html") is not None:
        if data.get("text") is not None:
            msg.add_alternative(data["html"], subtype="html")
        else:
            msg.set_content(data["html"], subtype="html")
    for attachment, content in _files(data):
        maintype, _, subtype = attachment["content_type"].partition("/")
        if maintype == "message":
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(
            content,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=attachment.get("filename"),
            cid=f"<{attachment['content_id']}>" if attachment.get("content_id") else None,
        )
    # Boundaries derived from the message id, not random: the same payload gives the same
    # bytes on every attempt.
    for n, part in enumerate(msg.walk()):
        if part.is_multipart():
            seed = f"{data.get('id', '')}\0{n}".encode()
            part.set_boundary("=_pop3bridge_" + hashlib.sha256(seed).hexdigest()[:32])
    return msg.as_string()


@functools.cache
def _text_of_html() -> type[HTMLParser]:
    # Made at the first HTML-only message: html.parser is ~2 ms of every start-up otherwise.
    from html.parser import HTMLParser

    class TextOfHtml(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.parts: list[str] = []
            self._skip = 0

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            if tag in ("script", "style"):
                self._skip += 1
            elif tag in ("br", "p", "div", "tr", "li", "h1", "h2", "h3"):
                self.parts.append("\n")

        def handle_endtag(self, tag: str) -> None:
            if tag in ("script", "style") and self._skip:
                self._skip -= 1

        def handle_data(self, text: str) -> None:
            if not self._skip:
                self.parts.append(text)

    return TextOfHtml


def _html_text(html: str) -> str:
    parser: Any = _text_of_html()()
    try:
        parser.feed(html)
        parser.close()
    except Exception:
        return ""
    lines = [" ".join(line.split()) for line in "".join(parser.parts).split("\n")]
    return "\n".join(line for line in lines if line)


# ------------------------------------------------------------------------------- postmark


def _full(entry: dict[str, Any]) -> dict[str, Any]:
    address = str(entry.get("address") or "")
    # To/Cc entries carry the hash under the account's separator; others get Postmark's "+".
    found = entry["mailbox_hash"] if "mailbox_hash" in entry else mailbox_hash(address, "+")
    return {"Email": address, "Name": entry.get("name") or "", "MailboxHash": found or ""}


def _postmark(data: dict[str, Any], raw: bytes | None, options: FormatOptions) -> dict[str, Any]:
    sender = data["from"][0] if data["from"] else {"name": None, "address": ""}
    headers = []
    path = _header(data, "Return-Path")
    if path is not None:
        # Postmark puts the envelope sender first; receivers (anymail) read it from there.
        headers.append({"Name": "Return-Path", "Value": path})
    headers += [
        {"Name": h["name"], "Value": h["value"]}
        for h in data["headers"]
        if h["name"].lower() not in _POSTMARK_OWN
    ]
    attachments: list[dict[str, Any]] = []
    for attachment, content in _files(data):
        item: dict[str, Any] = {
            "Name": _file_name(attachment, len(attachments) + 1),
            "Content": attachment["content"],
            "ContentType": attachment["content_type"],
            "ContentLength": len(content),
        }
        if attachment.get("content_id"):
            item["ContentID"] = attachment["content_id"]
        attachments.append(item)
    out: dict[str, Any] = {
        "FromName": sender.get("name") or "",
        "MessageStream": "inbound",
        "From": sender.get("address") or "",
        "FromFull": _full(sender),
        "To": _display_list(data["to"]),
        "ToFull": [_full(e) for e in data["to"]],
        "Cc": _display_list(data["cc"]),
        "CcFull": [_full(e) for e in data["cc"]],
        "Bcc": _display_list(data["bcc"]),
        "BccFull": [_full(e) for e in data["bcc"]],
        "OriginalRecipient": _recipient(data),
        "ReplyTo": _display_list(data["reply_to"]),
        "Subject": data["subject"] or "",
        "MessageID": str(uuid.uuid5(_POSTMARK_NS, data["id"])),
        "Date": _header(data, "Date") or "",
        "MailboxHash": data.get("mailbox_hash") or "",
        "TextBody": data["text"] or "",
        "HtmlBody": data["html"] or "",
        "StrippedTextReply": data.get("reply_text") or "",
        "Tag": "",
        "Headers": headers,
        "Attachments": attachments,
    }
    if options.include_raw:
        out["RawEmail"] = _mime(data, raw)
    return out


# ------------------------------------------------------------------------------- mailgun


def mailgun_token(msg_id: str) -> str:
    """50 characters, the same on every attempt: receivers dedupe on it."""
    return hashlib.sha256(b"pop3bridge mailgun token\0" + msg_id.encode()).hexdigest()[:50]


def mailgun_signature(key: str, timestamp: str, token: str) -> str:
    return hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def _mailgun(
    data: dict[str, Any], raw: bytes | None, options: FormatOptions, now: float
) -> list[Field]:
    timestamp = str(int(now))
    token = mailgun_token(data["id"])
    common = [
        Field("recipient", _recipient(data)),
        Field("sender", _envelope_sender(data)),
        Field("from", _display_list(data["from"])),
        Field("subject", data["subject"] or ""),
    ]
    signed = [
        Field("timestamp", timestamp),
        Field("token", token),
        Field("signature", mailgun_signature(options.signing_key, timestamp, token)),
    ]
    if options.mime:
        return [*common, Field("body-mime", _mime(data, raw)), *signed]
    text = data["text"] if data["text"] is not None else _html_text(data["html"] or "")
    fields = [
        *common,
        Field("body-plain", text),
        Field("stripped-text", data.get("reply_text") or ""),
        Field("stripped-signature", ""),
        Field(
            "message-headers",
            orjson.dumps([[h["name"], h["value"]] for h in data["headers"]]).decode(),
        ),
    ]
    if data["html"] is not None:
        fields.insert(5, Field("body-html", data["html"]))
    files = _files(data)
    if files:
        cids = {
            f"<{a['content_id']}>": f"attachment-{n}"
            for n, (a, _) in enumerate(files, 1)
            if a.get("content_id")
        }
        fields.append(Field("attachment-count", str(len(files))))
        fields.append(Field("content-id-map", orjson.dumps(cids).decode()))
    return [*fields, *signed, *_file_fields(files, "attachment-{}")]


# ------------------------------------------------------------------------------- sendgrid


def _sendgrid(data: dict[str, Any], raw: bytes | None, options: FormatOptions) -> list[Field]:
    envelope = {"to": [_recipient(data)], "from": _envelope_sender(data)}
    fields = [
        Field("envelope", orjson.dumps(envelope).decode()),
        Field("from", _display_list(data["from"])),
        Field("to", _display_list(data["to"])),
        Field("cc", _display_list(data["cc"])),
        Field("subject", data["subject"] or ""),
    ]
    auth = data.get("auth")
    if auth:
        if auth.get("dkim"):
            pairs = ", ".join(f"@{d['domain']} : {d['result']}" for d in auth["dkim"])
            fields.append(Field("dkim", "{" + pairs + "}"))
        if auth.get("spf"):
            fields.append(Field("SPF", str(auth["spf"]["result"])))
    spam = data.get("spam")
    if spam and spam.get("score") is not None:
        fields.append(Field("spam_score", repr(float(spam["score"]))))
    if options.mime:
        fields.append(Field("email", _mime(data, raw)))
        return fields
    charsets = dict.fromkeys(("to", "from", "cc", "subject", "text", "html"), "UTF-8")
    fields += [
        Field("headers", _header_block(data, raw)),
        Field("text", data["text"] or ""),
        Field("charsets", orjson.dumps(charsets).decode()),
    ]
    if data["html"] is not None:
        fields.append(Field("html", data["html"]))
    files = _files(data)
    fields.append(Field("attachments", str(len(files))))
    if files:
        info = {}
        cids = {}
        for n, (attachment, _) in enumerate(files, 1):
            key = f"attachment{n}"
            entry = {
                "filename": _file_name(attachment, n),
                "name": _file_name(attachment, n),
                "type": attachment["content_type"],
            }
            if attachment.get("content_id"):
                entry["content-id"] = attachment["content_id"]
                cids[attachment["content_id"]] = key
            info[key] = entry
        fields.append(Field("attachment-info", orjson.dumps(info).decode()))
        if cids:
            fields.append(Field("content-ids", orjson.dumps(cids).decode()))
        fields += _file_fields(files, "attachment{}")
    return fields


def _file_fields(files: list[tuple[dict[str, Any], bytes]], name: str) -> list[Field]:
    """One file part per attachment, numbered from 1 into `name` ("attachment-{}")."""
    return [
        Field(
            name.format(n),
            content,
            filename=_file_name(attachment, n),
            content_type=attachment["content_type"],
        )
        for n, (attachment, content) in enumerate(files, 1)
    ]


def _header_block(data: dict[str, Any], raw: bytes | None) -> str:
    """The raw header block as SendGrid posts it; rebuilt from the payload without `raw`."""
    if raw is None and data.get("raw"):
        raw = base64.b64decode(data["raw"])
    if raw is not None:
        return _raw_text(raw[: header_end(raw)]).rstrip("\r\n") + "\n"
    return _mime(data, None).split("\r\n\r\n", 1)[0].replace("\r\n", "\n") + "\n"

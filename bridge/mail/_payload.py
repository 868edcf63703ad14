"""The webhook payload: message `data`, the envelope around it, and its exact bytes.

`build_message_data` is the only entry point that sees untrusted bytes; it never raises. If
the parser itself gives up (for example on MIME nested thousands of levels deep), the payload
is still produced from the header block alone, with the reason in `parse_errors` and the raw
message attached even when the webhook did not ask for `raw`: the receiver must get
something it can act on.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from email.message import Message
from functools import cache
from typing import Any

import orjson

from bridge.mail._fingerprint import fingerprint, fingerprint_of
from bridge.mail._headers import (
    decode_addresses,
    decode_date,
    decode_header_value,
    decode_msgid_list,
    raw_to_str,
)
from bridge.mail._helpdesk import (
    DEFAULT_OPTIONS,
    MailOptions,
    auth_results,
    auto_submitted,
    mailbox_hash,
    original_recipient,
    spam_verdict,
)
from bridge.mail._limits import MAX_HEADER_BLOCK, field_over_limits, over_limits
from bridge.mail._mime import Content, parse, parse_headers, walk
from bridge.mail._mime import header_end as _header_end
from bridge.mail._reply import reply_text
from bridge.mail._text import clean
from bridge.mail.errors import PayloadEncodingError

__all__ = [
    "DEFAULT_OPTIONS",
    "HELPDESK_FIELDS",
    "MAX_PARSE_ERRORS",
    "MailOptions",
    "build_message_data",
    "build_message_data_and_fingerprint",
    "degraded",
    "encode",
    "envelope",
    "fingerprint",
    "metadata_only",
    "minimal",
    "schema",
]

log = logging.getLogger(__name__)

MAX_PARSE_ERRORS = 100
_ADDRESS_FIELDS = (
    ("from", "from"),
    ("sender", "sender"),
    ("reply_to", "reply-to"),
    ("to", "to"),
    ("cc", "cc"),
    ("bcc", "bcc"),
)


def build_message_data(
    raw: bytes,
    *,
    attachment_inline_limit: int,
    include_raw: bool,
    options: MailOptions = DEFAULT_OPTIONS,
) -> dict[str, Any]:
    """Every field of the payload's `data` except id/account/uidl/size (and source).

    `attachment_inline_limit` is in decoded bytes: attachments up to it carry base64
    `content`, larger ones only metadata. Never raises on any input bytes.
    """
    data, _ = _build(
        raw, attachment_inline_limit, include_raw, options, None, with_fingerprint=False
    )
    return data


def build_message_data_and_fingerprint(
    raw: bytes,
    *,
    attachment_inline_limit: int,
    include_raw: bool,
    options: MailOptions = DEFAULT_OPTIONS,
    contents: list[Content] | None = None,
) -> tuple[dict[str, Any], str]:
    """`build_message_data(raw, ...)` and `fingerprint(raw)` from a single parse.

    With a `contents` list, the decoded content of every attachment over the inline limit is
    appended to it (`Content.index` is its position in `attachments`), for big-attachment links.

    The poller needs both for every message and parsing is most of its CPU time; parsing the
    header block a second time for the fingerprint cost about 15 % of a fetch. The header
    block parses the same alone or as part of the whole message, so the fingerprint is the
    one `fingerprint(raw)` gives (stored fingerprints keep matching). Never raises.
    """
    data, digest = _build(raw, attachment_inline_limit, include_raw, options, contents)
    return data, digest if digest is not None else fingerprint(raw)


def _build(
    raw: bytes,
    attachment_inline_limit: int,
    include_raw: bool,
    options: MailOptions,
    contents: list[Content] | None,
    with_fingerprint: bool = True,
) -> tuple[dict[str, Any], str | None]:
    """The payload data and, `with_fingerprint`, the parsed message's fingerprint (None when
    the caller must scan the bytes for it); a body built at delivery needs none."""
    over = over_limits(raw, _header_end(raw))
    if over is not None:
        log.warning("message over a parse limit, delivered with headers only: %s", over)
        return degraded(raw, f"{over}; the message was not parsed", options=options), None
    errors: list[str] = []
    msg: Message | None = None
    try:
        msg = parse(raw)
        data = _header_fields(msg, errors)
        text, html, body = walk(msg, attachment_inline_limit, keep_contents=contents is not None)
        errors.extend(body.errors)
        if contents is not None and body.contents:
            contents.extend(body.contents)
        data["text"], data["html"], data["attachments"] = text, html, body.attachments
        content_type = body.content_type
    except Exception as exc:  # the parser gave up; fall back to the header block
        log.warning("message could not be parsed: %s", type(exc).__name__)
        errors = [f"the message could not be parsed ({type(exc).__name__}); raw message attached"]
        data = _headers_only(raw, errors)
        include_raw = True
        content_type = None
    data["raw"] = base64.b64encode(raw).decode("ascii") if include_raw else None
    helpdesk = _helpdesk_fields(data, options, content_type, errors)
    data["parse_errors"] = _tidy(errors)
    data.update(helpdesk)
    return data, fingerprint_of(msg) if with_fingerprint and msg is not None else None


def metadata_only(
    header_bytes: bytes, *, reason: str, options: MailOptions = DEFAULT_OPTIONS
) -> dict[str, Any]:
    """Payload data for a message too large to download: headers only, `reason` first."""
    errors = [clean(reason)]
    data = _headers_only(header_bytes, errors)
    data["raw"] = None
    helpdesk = _helpdesk_fields(data, options, None, errors)
    data["parse_errors"] = _tidy(errors)
    data.update(helpdesk)
    return data


# The helpdesk fields, in payload order after `parse_errors` (the fields before them keep
# their bytes); docs/formats.md and the schema describe each.
HELPDESK_FIELDS = (
    "reply_text",
    "mailbox_hash",
    "original_recipient",
    "auth",
    "spam",
    "auto_submitted",
)


def _helpdesk_fields(
    data: dict[str, Any], options: MailOptions, content_type: str | None, errors: list[str]
) -> dict[str, Any]:
    """The helpdesk fields of `data` (whose `headers_raw` it consumes); never raises.

    A field whose computation fails on some input is null with a `parse_errors` sentence:
    no field may keep a message from being delivered.
    """
    raw_headers: list[tuple[str, str]] = data.pop("_raw_headers", [])
    sep = options.mailbox_hash_separator
    out: dict[str, Any] = dict.fromkeys(HELPDESK_FIELDS)
    out["auto_submitted"] = False
    steps: list[tuple[str, Any]] = [
        ("reply_text", lambda: reply_text(data.get("text"))),
        ("original_recipient", lambda: original_recipient(raw_headers, errors)),
        ("auth", lambda: auth_results(raw_headers, options.trusted_authserv_ids, errors)),
        ("spam", lambda: spam_verdict(raw_headers, options.trust_spam_headers, errors)),
        ("auto_submitted", lambda: auto_submitted(raw_headers, content_type)),
    ]
    for key, step in steps:
        try:
            out[key] = step()
        except Exception as exc:  # a bug or a hostile value: report it, deliver anyway
            errors.append(f"{key} could not be worked out ({type(exc).__name__}); set to null")
            out[key] = False if key == "auto_submitted" else None
    try:
        for key in ("to", "cc"):
            for entry in data.get(key, []):
                entry["mailbox_hash"] = mailbox_hash(entry.get("address"), sep)
        out["mailbox_hash"] = _top_mailbox_hash(data, out["original_recipient"], sep)
    except Exception as exc:
        errors.append(f"mailbox_hash could not be worked out ({type(exc).__name__}); set to null")
    return out


def _top_mailbox_hash(data: dict[str, Any], recipient: str | None, sep: str) -> str | None:
    """The delivered-to address's hash; without one, the first To/Cc address that has one."""
    if recipient is not None:
        return mailbox_hash(recipient, sep)
    for key in ("to", "cc"):
        for entry in data.get(key, []):
            if entry.get("mailbox_hash"):
                return str(entry["mailbox_hash"])
    return None


def degraded(raw: bytes, reason: str, *, options: MailOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """Payload data when the whole message may not or could not be parsed: headers only
    (each field within the caps of `_limits`), the raw message attached, `reason` first.

    Used for messages over a cheap cap and, in the parse workers, for messages that ran out
    of CPU time or memory. Linear in the size of the header block.
    """
    errors = [f"{clean(reason)}; headers only, raw message attached"]
    return _attached(_headers_only(raw, errors), raw, options, errors)


def minimal(raw: bytes, reason: str, *, options: MailOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """`degraded` without even the header block: for a message whose parse killed its worker
    process, which the main process must not try to parse at all. Constant work plus base64.
    """
    errors = [f"{clean(reason)}; raw message attached"]
    data = _header_fields(Message(), errors)
    data["text"], data["html"], data["attachments"] = None, None, []
    return _attached(data, raw, options, errors)


def _attached(
    data: dict[str, Any], raw: bytes, options: MailOptions, errors: list[str]
) -> dict[str, Any]:
    data["raw"] = base64.b64encode(raw).decode("ascii")
    helpdesk = _helpdesk_fields(data, options, None, errors)
    data["parse_errors"] = _tidy(errors)
    data.update(helpdesk)
    return data


_CUT = 256  # characters kept of a header field over a cap


def _headers_only(raw: bytes, errors: list[str]) -> dict[str, Any]:
    """The payload's header fields from the header block alone, within the caps of `_limits`:
    a field over one is cut to its first characters and noted, so no decoder sees it whole.
    """
    end = _header_end(raw)
    if end > MAX_HEADER_BLOCK:
        errors.append(f"only the first {MAX_HEADER_BLOCK} bytes of the header block were read")
        end = MAX_HEADER_BLOCK
    try:
        parsed = parse_headers(raw[:end])
    except Exception as exc:
        errors.append(f"the header block could not be parsed either ({type(exc).__name__})")
        parsed = Message()
    safe = Message()
    for name, value in parsed.raw_items():
        text = str(value)
        over = field_over_limits(str(name).lower(), text)
        if over is not None:
            errors.append(f"{over}; its value is cut to {_CUT} characters and not decoded")
            text = text[:_CUT]
        safe[name] = text
    data = _header_fields(safe, errors)
    data["text"], data["html"], data["attachments"] = None, None, []
    return data


def _header_fields(msg: Message, errors: list[str]) -> dict[str, Any]:
    headers: list[dict[str, str]] = []
    # One pass over the fields, as `Message.get`/`get_all` would see them (first value, all
    # values; names compared lower-cased): eleven lookups each rescanned every field.
    every: dict[str, list[str]] = {}
    raw_headers: list[tuple[str, str]] = []
    # Values decoded without a problem, for Subject & co. below: decoding is the same whatever
    # the `where` (which only words the problems), so those are not decoded twice.
    decoded: dict[str, str] = {}
    for name, value in msg.raw_items():
        text = str(value)
        known = _NAMES.get(name)
        if known is None:
            known = _name(str(name), errors)
        lower, label, where = known
        every.setdefault(lower, []).append(text)
        raw_headers.append((lower, text))
        problems = len(errors)
        decoded_value = decode_header_value(text, where, errors)
        if len(errors) == problems:
            decoded.setdefault(text, decoded_value)
        headers.append({"name": label, "value": decoded_value})

    def first(name: str) -> str | None:
        values = every.get(name)
        return values[0] if values else None

    def optional(name: str, where: str) -> str | None:
        value = first(name)
        if value in decoded:
            return decoded[value] or None
        return _optional(value, where, errors)

    data: dict[str, Any] = {}
    data["message_id"] = optional("message-id", "Message-ID header")
    data["subject"] = optional("subject", "Subject header")
    data["date"] = decode_date(first("date"), "Date header", errors)
    for key, header in _ADDRESS_FIELDS:
        values = every.get(header, [])
        data[key] = decode_addresses(values, f"{header.title()} header", errors)
    data["in_reply_to"] = optional("in-reply-to", "In-Reply-To header")
    data["references"] = decode_msgid_list(first("references"), "References header", errors)
    data["headers"] = headers
    data["_raw_headers"] = raw_headers  # for the helpdesk fields; popped before encoding
    return data


# A field name's lower-cased form, label and `where` wording, for names that decode without
# a problem: the same few dozen names come back in every message (~10 us of each one's header
# fields). Bounded, as the names are the sender's to choose.
_NAMES: dict[str, tuple[str, str, str]] = {}
_NAMES_MAX = 2048


def _name(name: str, errors: list[str]) -> tuple[str, str, str]:
    problems = len(errors)
    label = clean(raw_to_str(name, "header name", errors)).strip()
    known = (name.lower(), label, f"{label[:60]} header")
    if len(errors) == problems:
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        _NAMES[name] = known
    return known


def _optional(value: str | None, where: str, errors: list[str]) -> str | None:
    if value is None:
        return None
    text = decode_header_value(value, where, errors)
    return text or None


def _tidy(errors: list[str]) -> list[str]:
    """Drop repeats (a broken charset repeats per header) and cap the list's length."""
    unique = [clean(e) for e in dict.fromkeys(errors)]
    if len(unique) > MAX_PARSE_ERRORS:
        extra = len(unique) - (MAX_PARSE_ERRORS - 1)
        unique = [*unique[: MAX_PARSE_ERRORS - 1], f"... and {extra} more problems"]
    return unique


def envelope(
    data: dict[str, Any],
    *,
    msg_id: str,
    account: str,
    uidl: str,
    size: int,
    timestamp: dt.datetime,
    source: str = "poller",
) -> dict[str, Any]:
    """The full Standard Webhooks body; ids first so a human reading the JSON sees them first.

    `timestamp` must be timezone-aware (it becomes RFC 3339 with offset); `source` is
    "poller" or "proxy" (the proxy's tap).
    """
    if timestamp.tzinfo is None:
        raise PayloadEncodingError("envelope timestamp must be timezone-aware (use UTC)")
    if source not in ("poller", "proxy"):
        raise PayloadEncodingError(f"envelope source must be 'poller' or 'proxy', not {source!r}")
    full = {"id": msg_id, "account": account, "uidl": uidl, "size": size, "source": source}
    full.update(data)
    return {
        "type": "message.received",
        "timestamp": timestamp.isoformat(timespec="seconds"),
        "data": full,
    }


def encode(body: dict[str, Any]) -> bytes:
    """Deterministic JSON bytes (orjson, insertion order, no whitespace) for signing."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        raise PayloadEncodingError(f"the webhook body is not JSON-serialisable: {exc}") from None


@cache
def schema() -> dict[str, Any]:
    """The payload JSON Schema shipped with the package (draft 2020-12)."""
    from importlib import resources  # only here: 4 ms of each parse worker's start

    text = resources.files("bridge.mail").joinpath("payload.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded

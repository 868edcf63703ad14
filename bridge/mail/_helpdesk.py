"""The fields helpdesk and ticketing receivers build on: plus-address hashes, the address this
copy was delivered to, the provider's authentication and spam verdicts, auto-reply markers.

Each is derived from headers, and each only from headers a receiver can trust:

- `original_recipient`: POP3 has no envelope, so the provider's delivery headers stand in for
  it, most trusted first: `Delivered-To`, `X-Original-To`, `Envelope-To`, `X-Envelope-To`,
  each read at its topmost occurrence (the provider adds its own above the sender's).
- `auth` and `spam`: only from the *provider block*, the run of trace and verdict fields at the
  top of the header block that the receiving provider prepends (Received, Return-Path,
  Delivered-To, ARC-*, Authentication-Results, Received-SPF, X-Spam-*, ...). The first field
  that is not one of those (DKIM-Signature, From, Message-ID, ...) was written by the sender,
  and nothing below it counts. Within the block only the topmost `Authentication-Results`
  naming a trusted authserv-id is used: a provider prepends its own above anything the sender
  forged with the same id (RFC 8601 §5 asks it to remove those, not all do).
- `auto_submitted`: RFC 3834 `Auto-Submitted` other than `no`, `Precedence: bulk|junk|list`,
  and the out-of-office markers of Exchange/Outlook and common autoresponders.

Nothing here raises on any header value: a value that cannot be read becomes a `parse_errors`
sentence and a null.
"""

from __future__ import annotations

import re
from email.utils import getaddresses
from typing import Any

from bridge.mail._headers import decode_header_value, raw_to_str, unfold
from bridge.mail._text import clean
from bridge.records import record

__all__ = [
    "MailOptions",
    "auth_results",
    "auto_submitted",
    "mailbox_hash",
    "original_recipient",
    "spam_verdict",
]


@record
class MailOptions:
    """Per-account choices that shape the payload (from `accounts[]`)."""

    # The character that starts the hash in "user+hash@domain" (Postmark's MailboxHash).
    mailbox_hash_separator: str = "+"
    # Authentication-Results authserv-ids of the account's own provider (mx.google.com ...).
    trusted_authserv_ids: tuple[str, ...] = ()
    # Whether the provider's X-Spam-* headers are believed.
    trust_spam_headers: bool = False


DEFAULT_OPTIONS = MailOptions()

Headers = list[tuple[str, str]]  # (lower-case name, raw value) in message order

_RECIPIENT_FIELDS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to")
_ADDR = re.compile(r"^[^\s@<>()\[\],;:\"]+@[^\s@<>()\[\],;:\"]+$")
_PROVIDER_FIELDS = frozenset(
    {
        "received",
        "x-received",
        "return-path",
        "delivered-to",
        "x-original-to",
        "envelope-to",
        "x-envelope-to",
        "received-spf",
        "authentication-results",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
        "x-spam",
        "x-virus-scanned",
        "x-virus-status",
    }
)
_PROVIDER_PREFIXES = (
    "x-spam-",
    "x-google-",
    "x-gm-",
    "x-ms-exchange-",
    "x-microsoft-antispam",
    "x-forefront-",
    "x-eopattributedmessage",
    "x-rspamd-",
    "x-ham-",
    "x-yahoo-",
    "x-apple-",
    "x-mailgun-",
    "x-me-",
    "x-gmx-",
    "x-ui-",
)


def mailbox_hash(address: str | None, separator: str) -> str | None:
    """The part after `separator` in the local part ("u+abc@d" -> "abc"); None if absent."""
    if not address or not separator:
        return None
    local, at, _ = address.rpartition("@")
    if not at:
        return None
    _, sep, tail = local.partition(separator)
    return tail if sep and tail else None


def original_recipient(headers: Headers, errors: list[str]) -> str | None:
    """The delivered-to address (module docstring), or None when no header names one."""
    first: dict[str, str] = {}
    for name, raw in headers:  # one pass for the four fields
        if name in _RECIPIENT_FIELDS and name not in first:
            first[name] = raw
    for field in _RECIPIENT_FIELDS:
        value = first.get(field)
        if value is None:
            continue
        where = f"{field.title()} header"
        text = unfold(raw_to_str(value, where, errors))
        address = _one_address(text)
        if address is None:
            errors.append(f"{where}: no address could be read from {_preview(text)!r}; ignored")
            continue
        return address
    return None


def _one_address(text: str) -> str | None:
    # Envelope-To may carry a list (Exim); the first is this copy's recipient.
    try:
        pairs = getaddresses([text])
    except Exception:
        return None
    for _, address in pairs:
        address = clean(address.strip())
        if _ADDR.match(address):
            return address
    return None


def provider_block(headers: Headers) -> Headers:
    """The fields at the top of the block that the receiving provider wrote."""
    block: Headers = []
    for name, value in headers:
        if name in _PROVIDER_FIELDS or name.startswith(_PROVIDER_PREFIXES):
            block.append((name, value))
        else:
            break
    return block


def auth_results(
    headers: Headers, trusted: tuple[str, ...], errors: list[str]
) -> dict[str, Any] | None:
    """SPF/DKIM/DMARC/ARC from the provider's own Authentication-Results (module docstring).

    None when no authserv-id is trusted or the provider block has no header naming one.
    """
    if not trusted:
        return None
    import authres  # imported here: only accounts that trust a provider pay for it

    wanted = {t.lower() for t in trusted}
    for name, value in provider_block(headers):
        if name != "authentication-results":
            continue
        where = "Authentication-Results header"
        text = unfold(raw_to_str(value, where, errors))
        if _authserv_id(text) not in wanted:
            continue
        try:
            parsed = authres.AuthenticationResultsHeader.parse_value(clean(text))
        except Exception as exc:
            errors.append(
                f"{where}: the trusted provider's results could not be parsed "
                f"({type(exc).__name__}); auth set to null"
            )
            return None
        return _verdicts(str(parsed.authserv_id).lower(), parsed.results)
    return None


def _authserv_id(text: str) -> str:
    # The authserv-id is the first token, before any comment, version or ";".
    head = re.sub(r"\([^)]*\)", " ", text.split(";", 1)[0]).split()
    return head[0].lower() if head else ""


def _verdicts(authserv_id: str, results: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "authserv_id": authserv_id,
        "spf": None,
        "dkim": [],
        "dmarc": None,
        "arc": None,
    }
    for result in results:
        method = str(getattr(result, "method", "")).lower()
        verdict = str(getattr(result, "result", "")).lower() or None
        props = {
            f"{p.type}.{p.name}".lower(): clean(str(p.value))
            for p in getattr(result, "properties", [])
        }
        if method == "spf" and out["spf"] is None:
            domain = props.get("smtp.mailfrom") or props.get("smtp.helo")
            out["spf"] = {"result": verdict, "domain": _domain(domain)}
        elif method == "dkim":
            domain = props.get("header.d") or _domain(props.get("header.i"))
            out["dkim"].append(
                {"result": verdict, "domain": domain, "selector": props.get("header.s")}
            )
        elif method == "dmarc" and out["dmarc"] is None:
            out["dmarc"] = {"result": verdict, "domain": props.get("header.from")}
        elif method == "arc" and out["arc"] is None:
            out["arc"] = {"result": verdict}
    return out


def _domain(value: str | None) -> str | None:
    if not value:
        return None
    return value.rpartition("@")[2] or None


_SCORE = re.compile(r"(?:^|[\s,;])(?:score|hits)=(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)")


def spam_verdict(headers: Headers, trusted: bool, errors: list[str]) -> dict[str, Any] | None:
    """{score, is_spam, status} from the provider block's X-Spam-* fields; None if untrusted
    or none there."""
    if not trusted:
        return None
    found: dict[str, str] = {}
    for name, value in provider_block(headers):
        if name in ("x-spam-status", "x-spam-score", "x-spam-flag") and name not in found:
            found[name] = decode_header_value(value, f"{name.title()} header", errors)
    if not found:
        return None
    status = found.get("x-spam-status")
    score: float | None = None
    if "x-spam-score" in found:
        match = _NUMBER.match(found["x-spam-score"])
        if match:
            score = float(match[1])
        else:
            errors.append(
                f"X-Spam-Score header: {_preview(found['x-spam-score'])!r} is not a number; "
                "score set to null"
            )
    if score is None and status is not None:
        match = _SCORE.search(status)
        if match:
            score = float(match[1])
    is_spam: bool | None = None
    flag = found.get("x-spam-flag", "").strip().lower()
    if flag in ("yes", "no"):
        is_spam = flag == "yes"
    elif status is not None:
        word = status.strip().split(",", 1)[0].strip().lower()
        if word in ("yes", "no"):
            is_spam = word == "yes"
    return {"score": score, "is_spam": is_spam, "status": status}


_AUTO_FIELDS = frozenset(
    {
        "auto-submitted",
        "precedence",
        "x-precedence",
        "x-autoreply",
        "x-autorespond",
        "x-autoresponder",
        "x-auto-response-suppress",
        "x-post-messageclass",
        "return-path",
    }
)
_AUTO_REPLY_SUPPRESS = re.compile(r"\b(?:oof|autoreply|all)\b", re.IGNORECASE)


def auto_submitted(headers: Headers, content_type: str | None) -> bool:
    """True for auto-generated mail a receiver must not answer automatically (RFC 3834)."""
    first: dict[str, str] = {}
    for name, value in headers:  # the first of each field it reads, tidied once
        if name in _AUTO_FIELDS and name not in first:
            first[name] = clean(unfold(value)).strip()
    auto = first.get("auto-submitted")
    # The keyword, without parameters (";") or a comment ("(...)"), RFC 3834 §5.
    if auto is not None and re.split(r"[;(\s]", auto, maxsplit=1)[0].lower() not in ("no", ""):
        return True
    if first.get("precedence", "").lower() in ("bulk", "junk", "list", "auto_reply"):
        return True
    if first.get("x-precedence", "").lower() in ("bulk", "junk", "list", "auto_reply"):
        return True
    if any(k in first for k in ("x-autoreply", "x-autorespond", "x-autoresponder")):
        return True
    if _AUTO_REPLY_SUPPRESS.search(first.get("x-auto-response-suppress", "")):
        return True
    if "autoresponder" in first.get("x-post-messageclass", "").lower():
        return True
    if first.get("return-path", "").replace(" ", "") == "<>":
        return True  # a bounce or other delivery report (RFC 5321 null reverse-path)
    return (content_type or "").lower() == "multipart/report"


def _preview(text: str, limit: int = 80) -> str:
    text = clean(text)
    return text if len(text) <= limit else text[:limit] + "…"

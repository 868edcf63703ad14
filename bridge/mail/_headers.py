"""Header values: raw (possibly 8-bit, possibly folded, possibly RFC 2047 encoded) -> str.

Our own RFC 2047 decoder rather than `email.header.decode_header`: the stdlib one raises on
bad base64 and unknown charsets, and it decodes each encoded word on its own, which garbles
multi-byte characters that broken encoders split across two adjacent words. Here adjacent
words in the same charset are joined as bytes first and decoded once.
"""

from __future__ import annotations

import binascii
import datetime as dt
import functools
import re
from email.utils import getaddresses, parsedate_tz

from bridge.mail._text import clean, decode_bytes, recover_bytes

__all__ = [
    "decode_addresses",
    "decode_date",
    "decode_header_value",
    "decode_msgid_list",
    "unfold",
]

_FOLD = re.compile(r"\r?\n(?=[ \t])|\r\n|[\r\n]")
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"[ \t]*")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_BASE64_LETTERS = re.compile(r"[A-Za-z0-9+/]*")
_MSGID = re.compile(r"<[^<>]*>")


def unfold(value: str) -> str:
    """Remove folding line breaks (RFC 5322 §2.2.3) and trim the surrounding whitespace."""
    if "\n" in value or "\r" in value:
        value = _FOLD.sub("", value)
    return value.strip(" \t")


def raw_to_str(value: str, where: str, errors: list[str]) -> str:
    """Turn a parser-supplied header string (8-bit bytes smuggled as surrogates) into text."""
    if value.isascii():
        return value
    text, problem = decode_bytes(recover_bytes(value), None, where)
    if problem:
        errors.append(problem)
    return text


def _decode_q(payload: str) -> bytes:
    data = payload.replace("_", " ").encode("ascii", "replace")
    return _QP_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data)


def _decode_b(payload: str, where: str, errors: list[str]) -> bytes:
    letters = payload.rstrip("=")
    try:
        if _BASE64_LETTERS.fullmatch(letters) is None or len(letters) % 4 == 1:
            raise binascii.Error(where)
        # Missing padding is common and harmless, so it is restored rather than reported.
        return binascii.a2b_base64(letters + "=" * (-len(letters) % 4))
    except binascii.Error:
        errors.append(f"{where}: an encoded word had invalid base64 and was kept as is")
        raise


def decode_words(text: str, where: str, errors: list[str]) -> str:
    """Decode RFC 2047 encoded words inside already-unfolded header text."""
    if "=?" not in text:
        return text
    if len(text) <= _CACHE_TEXT:
        decoded = _decode_words_without_problems(text)
        if decoded is not None:
            return decoded
    return _decode_words(text, where, errors)


@functools.lru_cache(maxsize=1024)
def _decode_words_without_problems(text: str) -> str | None:
    """`decode_words(text)` when decoding reports no problem, else None (the caller then
    decodes again to word the problems for its header). Display names, and often subjects,
    repeat from message to message; decoding is a fifth of the header fields' cost."""
    problems: list[str] = []
    decoded = _decode_words(text, "", problems)
    return None if problems else decoded


def _decode_words(text: str, where: str, errors: list[str]) -> str:
    out: list[str] = []
    pos = 0
    pending: bytes = b""
    pending_charset: str | None = None
    match = _ENCODED_WORD.search(text, pos)
    while match is not None:
        gap = text[pos : match.start()]
        # Whitespace between two encoded words is not part of the text (RFC 2047 §6.2).
        if pending_charset is None or _BETWEEN_WORDS.fullmatch(gap) is None:
            if pending_charset is not None:
                out.append(_flush(pending, pending_charset, where, errors))
                pending, pending_charset = b"", None
            out.append(gap)
        charset, kind, payload = match.group(1).lower(), match.group(2), match.group(3)
        try:
            data = _decode_q(payload) if kind in "Qq" else _decode_b(payload, where, errors)
        except binascii.Error:
            if pending_charset is not None:
                out.append(_flush(pending, pending_charset, where, errors))
                pending, pending_charset = b"", None
            out.append(match.group(0))
        else:
            if pending_charset is not None and pending_charset != charset:
                out.append(_flush(pending, pending_charset, where, errors))
                pending = b""
            pending_charset = charset
            pending += data
        pos = match.end()
        match = _ENCODED_WORD.search(text, pos)
    if pending_charset is not None:
        out.append(_flush(pending, pending_charset, where, errors))
    out.append(text[pos:])
    return "".join(out)


def _flush(data: bytes, charset: str, where: str, errors: list[str]) -> str:
    text, problem = decode_bytes(data, charset, where)
    if problem:
        errors.append(problem)
    return text


def decode_header_value(value: str, where: str, errors: list[str]) -> str:
    """Full decoding of an unstructured header value: 8-bit bytes, folding, encoded words."""
    if value.isascii() and "=?" not in value and "\n" not in value and "\r" not in value:
        return value.strip(" \t")  # what the steps below leave of such a value
    return clean(decode_words(unfold(raw_to_str(value, where, errors)), where, errors))


def decode_addresses(
    values: list[str], where: str, errors: list[str]
) -> list[dict[str, str | None]]:
    """Parse address headers into [{name, address}], flattening groups.

    Encoded words are decoded per display name *after* splitting: decoding first could
    introduce commas or angle brackets that would change how the list splits. Entries with
    neither a name nor an address (junk between commas, empty groups) are dropped; a
    header that had content but yielded nothing is reported.
    """
    result: list[dict[str, str | None]] = []
    for value in values:
        text = unfold(raw_to_str(value, where, errors))
        if not text:
            continue
        pairs = _split_addresses(text)
        found = 0
        for name, address in pairs:
            address = clean(address.strip())
            name = clean(decode_words(name.strip(), where, errors).strip())
            if not address and not name:
                continue
            found += 1
            result.append({"name": name or None, "address": address})
        if not found and not _is_empty_group(text):
            errors.append(f"{where}: no address could be parsed from {_preview(text)!r}")
    return result


def _split_addresses(text: str) -> tuple[tuple[str, str], ...]:
    """`getaddresses`, remembered for ordinary-length values: it is a tenth of the poller's
    parse time, and one mailbox's To: (and its regular senders' From:) repeat from message to
    message. Long values are not kept, so the cache stays within a few megabytes."""
    return _split_cached(text) if len(text) <= _CACHE_TEXT else _split(text)


_CACHE_TEXT = 1000


def _split(text: str) -> tuple[tuple[str, str], ...]:
    plain = _plain_addresses(text)
    if plain is not None:
        return plain
    try:
        return tuple(getaddresses([text]))
    except Exception:  # the stdlib parser has raised on odd input in several releases
        return ()


# The stdlib address parser walks a value character by character in Python (~30 us for one
# `"Name" <a@b>`); most values are a list of such entries or of bare addresses, for which its
# answer is plain to see. `_plain_addresses` gives that answer, and None for anything else:
# comments, groups, quoted local parts, backslashes, route syntax, blanks inside an address,
# empty entries, a comma inside quotes (tests/mail/test_mail_headers.py compares the two).
_ATOM = r"[!#-'*+\-./0-9=?A-Z^-~]+"  # printable ASCII but blanks and ()<>@,:;"[]\
_LOCAL = r"[!#-'*+\-/0-9=?A-Z^-~]+(?:\.[!#-'*+\-/0-9=?A-Z^-~]+)*"
_ADDRESS = _LOCAL + r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_NAMED = re.compile(
    rf'[ \t]*(?:"([^"\\\r\n]*)"|({_ATOM}(?:[ \t]+{_ATOM})*))[ \t]*<({_ADDRESS})>[ \t]*'
)
_BARE = re.compile(rf"[ \t]*({_ADDRESS})[ \t]*")


def _plain_addresses(text: str) -> tuple[tuple[str, str], ...] | None:
    """`tuple(getaddresses([text]))` for plain address lists, or None (see above)."""
    out: list[tuple[str, str]] = []
    for piece in text.split(","):
        bare = _BARE.fullmatch(piece)
        if bare is not None:
            out.append(("", bare[1]))
            continue
        named = _NAMED.fullmatch(piece)
        if named is None:
            return None
        quoted, atoms = named[1], named[2]
        out.append((quoted if atoms is None else " ".join(atoms.split()), named[3]))
    return tuple(out)


_split_cached = functools.lru_cache(maxsize=1024)(_split)


def _is_empty_group(text: str) -> bool:
    head, sep, tail = text.partition(":")
    return bool(sep) and tail.strip() in (";", "") and "@" not in head


def _preview(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def decode_date(value: str | None, where: str, errors: list[str]) -> str | None:
    """RFC 5322 date -> RFC 3339 with offset; None (and a problem) when it cannot be read.

    A zone of -0000 ("no zone information", RFC 5322 §3.3) is rendered as UTC, because RFC 3339
    requires an offset and UTC is the only honest neutral choice.
    """
    if value is None:
        return None
    text = unfold(raw_to_str(value, where, errors))
    if not text:
        return None
    try:
        parts = parsedate_tz(text)
        if parts is None:
            raise ValueError(text)
        year, month, day, hour, minute, second = parts[:6]
        zone = dt.timezone(dt.timedelta(seconds=parts[9] or 0))
        when = dt.datetime(year, month, day, hour, minute, second, tzinfo=zone)
    except (ValueError, TypeError, OverflowError, IndexError):
        errors.append(f"{where}: unreadable date {_preview(clean(text))!r}; date set to null")
        return None
    return when.isoformat()


def decode_msgid_list(value: str | None, where: str, errors: list[str]) -> list[str]:
    """Message-ID lists (References): the <...> tokens, or whitespace-split words if none."""
    if value is None:
        return []
    text = clean(unfold(raw_to_str(value, where, errors)))
    ids = _MSGID.findall(text)
    return ids if ids else text.split()

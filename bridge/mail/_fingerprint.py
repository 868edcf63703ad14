"""The one header hash: a message's fingerprint, and the id of a message on a server without UIDL.

`fingerprint` is sha256 over the Message-ID, Date, From and Subject of a header block, values
taken undecoded and whitespace-normalised, so the same message gives the same value from RETR
and from `TOP n 0` even if a server refolds headers. The poller stores it with every seen
UIDL to recognise mail it already delivered under another UIDL (a migrated mailbox).

`header_uid` is "hdr-" + the fingerprint: the id the POP3 client gives a message when the
server has no UIDL (the client takes it as a function, since `pop3` may not import `mail`).
Until this module, the client had a hash of its own over the same four headers; ids it gave
are still in the stores of servers without UIDL. On the first poll after the upgrade every
one of them vanishes at once, which is what the poller's migration check looks for
(`bridge.poller.migration`): the fingerprints stored with them re-key the mail instead of
delivering the mailbox again (tests/poller/test_header_ids_upgrade.py).
"""

from __future__ import annotations

import hashlib
import re
from email.message import Message

from bridge.mail._headers import unfold
from bridge.mail._mime import header_end as _header_end
from bridge.mail._mime import parse_headers

__all__ = [
    "HEADER_UID_PREFIX",
    "fingerprint",
    "fingerprint_of",
    "header_keys",
    "header_uid",
    "message_id",
]

HEADER_UID_PREFIX = "hdr-"


def header_uid(headers: bytes) -> str:
    """The id of a message on a server without UIDL: "hdr-" + `fingerprint(headers)`.

    Stable across sessions as long as the four headers are; identical copies share it.
    """
    return HEADER_UID_PREFIX + fingerprint(headers)


_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*([^\r\n]{1,998})", re.IGNORECASE | re.MULTILINE)


def message_id(raw_or_headers: bytes) -> str | None:
    """The first Message-ID field's value as written (stripped; undecoded), or None.

    For the custody trail's look-up by Message-ID: a scan of the header block, not a parse, so
    it costs a few microseconds per fetched message. A folded value keeps its first line only.
    """
    return _message_id_in(raw_or_headers, _header_end(raw_or_headers))


def _message_id_in(raw: bytes, end: int) -> str | None:
    match = _MESSAGE_ID.search(raw, 0, end)
    if match is None:
        return None
    value = match[1].strip().decode("ascii", "replace")
    return value or None


def fingerprint(raw_or_headers: bytes) -> str:
    """sha256 hex over Message-ID, Date, From and Subject of the header block.

    Values are taken undecoded and whitespace-normalised, so the same message gives the same
    fingerprint from RETR and from `TOP n 0` even if a server refolds headers.
    """
    plain = _plain_fingerprint_fields(raw_or_headers)
    if plain is not None:
        return _digest(plain)
    return _parsed_fingerprint(raw_or_headers)


def _parsed_fingerprint(raw: bytes) -> str:
    try:
        fields = _fingerprint_fields(parse_headers(raw))
    except Exception:  # never let a hostile header block stop a migration check
        fields = [raw[: raw.find(b"\n\n")].hex()]
    return _fingerprint_digest(fields)


# A header block made only of field lines, each with its continuation lines, then at most the
# blank line: exactly the blocks the feed parser reads to the end as header fields, with the
# bytes that break lines for it left out. Those it leaves to the parser: a CR that does not
# start CRLF, VT, FF and FS/GS/RS (its `str.splitlines` breaks there), and US (whitespace to
# `str.split` but not to `bytes.split`).
_PLAIN_BLOCK = re.compile(
    rb"(?:[\x21-\x39\x3b-\x7e]+:[^\r\n\x0b\x0c\x1c-\x1f]*\r?\n"
    rb"(?:[ \t][^\r\n\x0b\x0c\x1c-\x1f]*\r?\n)*)*(?:\r?\n)?"
)
# The four fields, each value with its continuation lines (without the last line end): one
# pattern for the first line, one for the others (a literal LF first lets the regex engine
# skip to line starts instead of trying a `^` at every byte).
_WANTED = rb"(message-id|date|from|subject):([^\n]*(?:\n[ \t][^\n]*)*)"
_WANTED_FIRST = re.compile(_WANTED, re.IGNORECASE)
_WANTED_NEXT = re.compile(rb"\n" + _WANTED, re.IGNORECASE)
_FINGERPRINT_NAMES = (b"message-id", b"date", b"from", b"subject")


def header_keys(raw: bytes) -> tuple[str, str | None]:
    """`(fingerprint(raw), message_id(raw))` from one scan of the header block.

    The fetch stage needs both for every message it records; apart, they cost two header-end
    searches and three passes over the block. For a plain block (`_plain_scan`) both come from
    the one pass that finds the fingerprint's fields; anything else takes the two functions.
    """
    end = _header_end(raw)
    scanned = _plain_scan(raw, end)
    if scanned is None:
        return _parsed_fingerprint(raw), _message_id_in(raw, end)
    return _digest(scanned[0]), scanned[1]


def _plain_fingerprint_fields(raw: bytes) -> list[bytes] | None:
    """`_fingerprint_fields(parse_headers(raw))` without the parser, for ordinary headers, as
    the bytes the digest is taken over (the parser's str values encoded back); None for
    anything unusual (`_plain_scan`)."""
    scanned = _plain_scan(raw, _header_end(raw))
    return None if scanned is None else scanned[0]


def _plain_scan(raw: bytes, end: int) -> tuple[list[bytes], str | None] | None:
    """The fingerprint's fields and the Message-ID of the header block `raw[:end]`, or None
    to leave both to the parser and `message_id`'s regex.

    The fetch stage computes a fingerprint for every message it records, and parsing the
    header block for it cost about 85 us, most of the stage's time per message. The scan gives
    the parser's values exactly (the tests compare the two on generated and hostile header
    blocks), and returns None, leaving it to the parser, for anything unusual: a line that
    is neither a field nor a continuation (the parser's header block would end there), a
    leading continuation, an mbox "From " line, or a line break other than LF/CRLF.
    """
    block = raw[:end]
    if block[-1:] != b"\n":
        block += b"\n"  # the value is stripped of line ends anyway
    if _PLAIN_BLOCK.fullmatch(block) is None:
        return None
    values: dict[bytes, bytes] = {}
    ids: list[bytes] = []
    first = _WANTED_FIRST.match(block)
    for match in (
        _WANTED_NEXT.finditer(block) if first is None else (first, *_WANTED_NEXT.finditer(block))
    ):
        key = match[1].lower()
        values.setdefault(key, match[2])
        if key == b"message-id":
            ids.append(match[2])
    # Unfolding and collapsing whitespace as `_normalised` does: with no odd breaks and no US
    # in the block, bytes.split() splits exactly where str.split() does.
    fields = [
        b" ".join(values[key].split()) if key in values else b"" for key in _FINGERPRINT_NAMES
    ]
    return fields, _first_message_id(ids)


def _first_message_id(values: list[bytes]) -> str | None:
    """What `_MESSAGE_ID` finds in a plain block whose Message-ID fields have `values`: the
    first field with anything after the colon on its first line; that, after blanks, cut to
    998 octets, stripped."""
    for value in values:
        line = value.split(b"\n", 1)[0]
        if line[-1:] == b"\r":
            line = line[:-1]  # a plain block has CR only before LF
        if not line:
            continue  # nothing on the field's first line: the regex tries the next field
        found = line.lstrip(b" \t")[:998].strip().decode("ascii", "replace")
        return found or None
    return None


def fingerprint_of(msg: Message) -> str | None:
    """`fingerprint` of an already parsed message (the payload builder's), or None if a
    hostile header makes the parser's values unusable (the caller then scans the bytes)."""
    try:
        return _fingerprint_digest(_fingerprint_fields(msg))
    except Exception:  # as in `fingerprint`: never let a hostile header stop anything
        return None


def _fingerprint_fields(msg: Message) -> list[str]:
    return [_normalised(msg.get(name)) for name in ("message-id", "date", "from", "subject")]


def _fingerprint_digest(fields: list[str]) -> str:
    return _digest([f.encode("utf-8", "surrogateescape") for f in fields])


def _digest(fields: list[bytes]) -> str:
    """sha256 hex of the fields joined by NUL: the scan hands over bytes, the parser str."""
    return hashlib.sha256(b"\x00".join(fields)).hexdigest()


def _normalised(value: object) -> str:
    if value is None:
        return ""
    return " ".join(unfold(str(value)).split())

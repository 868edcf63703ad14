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
# `str.split` but not to `bytes.split`). As one pattern (the reference the tests hold
# `_is_plain` to):
#   (?:[\x21-\x39\x3b-\x7e]+:[^\r\n\x0b\x0c\x1c-\x1f]*\r?\n
#      (?:[ \t][^\r\n\x0b\x0c\x1c-\x1f]*\r?\n)*)*(?:\r?\n)?
# `_is_plain` checks the same with a few C-speed passes instead of walking every byte through
# the pattern (which was a third of the scan): no odd byte and no CR but before an LF (deleting
# these bytes then deletes exactly one per CRLF), and every line a field or a continuation.
_CR_AND_ODD = b"\r\x0b\x0c\x1c\x1d\x1e\x1f"
_FIELD_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")
# A line start (after the first line) that begins neither a continuation nor a field line.
_BAD_LINE = re.compile(rb"\n(?![ \t]|[\x21-\x39\x3b-\x7e]+:)")
_FINGERPRINT_NAMES = (b"message-id", b"date", b"from", b"subject")
# Each name as it starts a field line, in a block after a line break put in front of it.
_FIELD_STARTS = tuple(b"\n" + name + b":" for name in _FINGERPRINT_NAMES)


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

    In a plain block every LF starts a line, so a field is found by searching the lower-cased
    block for LF + its name + ":" (the names are ASCII, and lower-casing bytes keeps every
    offset); its value runs to the first LF not followed by a blank (a continuation line).
    """
    block = raw[:end]
    if block[-1:] != b"\n":
        block += b"\n"  # the value is stripped of line ends anyway
    if not _is_plain(block):
        return None
    lower = b"\n" + block.lower()  # offsets in `lower` are those in `block` plus one
    fields: list[bytes] = []
    message_id: str | None = None
    for name in _FIELD_STARTS:
        at = lower.find(name)
        if at < 0:
            fields.append(b"")
            continue
        at += len(name) - 1
        end = first_end = block.find(b"\n", at)
        while block[end + 1 : end + 2] in (b" ", b"\t"):
            end = block.find(b"\n", end + 1)  # a continuation line: a plain block ends in LF
        fields.append(b" ".join(block[at:end].split()))
        if name is _FIELD_STARTS[0]:
            message_id = _first_message_id(block, lower, at, first_end)
    return fields, message_id


def _is_plain(block: bytes) -> bool:
    """Whether `block` (ending in LF) is a plain header block (the comment above
    `_CR_AND_ODD`)."""
    if len(block) - len(block.translate(None, _CR_AND_ODD)) != block.count(b"\r\n"):
        return False  # an odd byte, or a CR that does not start CRLF
    # At most one blank line, and only at the end: the last line of `block` is then empty.
    if block.endswith(b"\n\r\n"):
        body = block[:-2]
    elif block.endswith(b"\n\n"):
        body = block[:-1]
    elif block in (b"\n", b"\r\n"):
        return True  # nothing but the blank line
    else:
        body = block
    if _FIELD_LINE.match(body) is None:
        return False  # the first line is no field line (a leading continuation included)
    # `body` ends with LF, the end of its last line: no line starts there.
    return _BAD_LINE.search(body, 0, len(body) - 1) is None


def _first_message_id(block: bytes, lower: bytes, at: int, end: int) -> str | None:
    """What `_MESSAGE_ID` finds in the plain block `block` (`lower`: LF + it lower-cased)
    whose first Message-ID field's value starts at `at`, its first line ending at `end`: the
    first Message-ID field with anything after the colon on its first line; that, after
    blanks, cut to 998 octets, stripped."""
    name = _FIELD_STARTS[0]
    while True:
        line = block[at : end - 1 if block[end - 1 : end] == b"\r" else end]
        if line:
            found = line.lstrip(b" \t")[:998].strip().decode("ascii", "replace")
            return found or None
        # Nothing on the field's first line: the regex tries the next field.
        at = lower.find(name, end + 1)
        if at < 0:
            return None
        at += len(name) - 1
        end = block.find(b"\n", at)


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

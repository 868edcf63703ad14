"""Parsing of response content: status lines, response codes, greeting timestamp, CAPA, STAT,
LIST and UIDL lines.

Status tokens are matched exactly ("+OK" / "-ERR", upper case, then a space or the end): a server
that says "+ERR" has not said yes (RFC 1939 §3). Everything after the token is optional.
"""

from __future__ import annotations

import re

from bridge.pop3.errors import RemoteProtocolError
from bridge.pop3.events import StatusResponse

__all__ = [
    "apop_timestamp",
    "parse_capa",
    "parse_list",
    "parse_list_line",
    "parse_stat",
    "parse_status_line",
    "parse_uidl",
    "parse_uidl_line",
]

_CODE = re.compile(rb"\[([^\]\s]+)\]")
# An RFC 822 msg-id shaped token. Requiring "@" (as curl does) avoids taking an arbitrary
# bracketed word in the greeting text for an APOP challenge.
_TIMESTAMP = re.compile(rb"<[!-;=?-~]*@[!-;=?-~]*>")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def parse_status_line(line: bytes, raw: bytes) -> StatusResponse:
    """Parse a status line given without its line ending; `raw` is the line as received."""
    if line.startswith(b"+OK"):
        ok, rest = True, line[3:]
    elif line.startswith(b"-ERR"):
        ok, rest = False, line[4:]
    else:
        raise RemoteProtocolError(f"expected +OK or -ERR, got {_shorten(line)!r}")
    if rest and not rest.startswith(b" "):
        raise RemoteProtocolError(f"malformed status token in {_shorten(line)!r}")
    rest = rest[1:]
    code = None
    if rest.startswith(b"["):
        match = _CODE.match(rest)
        if match:
            code = _text(match.group(1)).upper()
            rest = rest[match.end() :].lstrip(b" ")
    return StatusResponse(ok, code, _text(rest), raw)


def _shorten(line: bytes, limit: int = 80) -> bytes:
    return line if len(line) <= limit else line[:limit] + b"..."


def apop_timestamp(greeting_text: bytes | str) -> str | None:
    """The APOP challenge from anywhere in the greeting text, brackets included."""
    data = greeting_text
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    if data.find(b"<") < 0:  # most greetings (Dovecot's among them) offer no APOP
        return None
    match = _TIMESTAMP.search(data)
    return match.group(0).decode("ascii") if match else None


def parse_capa(body: bytes) -> dict[str, tuple[str, ...]]:
    """CAPA body (un-stuffed, lines ended by CRLF or LF) -> {TAG: params}; tags upper-cased."""
    caps: dict[str, tuple[str, ...]] = {}
    for line in body.splitlines():
        words = _text(line).split()
        if words:
            caps[words[0].upper()] = tuple(words[1:])
    return caps


def _int(word: bytes, what: str) -> int:
    if not word.isdigit():
        raise RemoteProtocolError(f"{what}: expected a decimal number, got {_shorten(word)!r}")
    return int(word)


def parse_stat(status: StatusResponse) -> tuple[int, int]:
    """(message count, total octets) from a STAT +OK; trailing text is ignored (RFC 1939 §5)."""
    words = status.text.encode("utf-8", "replace").split()
    if len(words) < 2:
        raise RemoteProtocolError(f"STAT reply lacks count and size: {status.text[:80]!r}")
    return _int(words[0], "STAT count"), _int(words[1], "STAT size")


def parse_list_line(line: bytes) -> tuple[int, int]:
    """(number, size) from a LIST scan line (or the text of a LIST n +OK); extra text allowed."""
    words = line.split()
    if len(words) < 2:
        raise RemoteProtocolError(f"LIST line lacks number and size: {_shorten(line)!r}")
    return _int(words[0], "LIST number"), _int(words[1], "LIST size")


def parse_uidl_line(line: bytes) -> tuple[int, str]:
    """(number, uid) from a UIDL line; uid kept as sent.

    Out-of-spec ids (over 70 characters, inner spaces, non-ASCII, several spaces after the
    number, as Maillennium sends) are accepted as they come, like mpop does; only surrounding
    whitespace is dropped. A blank uid comes back as "" and the caller decides.
    """
    stripped = line.strip(b" \t\r\n")
    number, _, rest = stripped.partition(b" ")
    if not number:
        raise RemoteProtocolError("UIDL line is empty")
    return _int(number, "UIDL number"), rest.strip(b" \t").decode("utf-8", "surrogateescape")


# Bodies of LIST and UIDL made only of the lines servers send (number, one space, size or an
# RFC 1939 id, CRLF): `parse_list` and `parse_uidl` take these apart with one split instead of
# one call per line (a poll of 2,000 new messages reads both before it fetches anything).
_PLAIN_LIST = re.compile(rb"(?:[0-9]+ [0-9]+\r\n)*")
_PLAIN_UIDL = re.compile(rb"(?:[0-9]+ [\x21-\x7e]+\r\n)*")


def parse_list(body: bytes) -> list[tuple[int, int]]:
    """`parse_list_line` of every non-blank line of a LIST body."""
    if _PLAIN_LIST.fullmatch(body) is not None:
        words = body.split()
        return list(zip(map(int, words[0::2]), map(int, words[1::2]), strict=True))
    return [parse_list_line(line) for line in body.splitlines() if line.strip()]


def parse_uidl(body: bytes) -> list[tuple[int, str]]:
    """`parse_uidl_line` of every non-blank line of a UIDL body."""
    if _PLAIN_UIDL.fullmatch(body) is not None:
        words = body.decode("ascii").split()
        return list(zip(map(int, words[0::2]), words[1::2], strict=True))
    return [parse_uidl_line(line) for line in body.splitlines() if line.strip()]

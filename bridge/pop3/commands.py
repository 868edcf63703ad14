"""Command encoding and validation, and which replies are multi-line.

The response kind depends on the verb and on whether an argument is present (LIST vs LIST n),
so the table is keyed by both. A verb missing from the table has no known framing: the client
refuses to send it, a proxy has to decide for itself (reject it or relay opaquely).
"""

from __future__ import annotations

import enum

from bridge.pop3.errors import LocalProtocolError
from bridge.pop3.events import Command

__all__ = [
    "LOGIN_VERBS",
    "MAX_COMMAND_LINE",
    "SECRET_VERBS",
    "Command",
    "ResponseKind",
    "encode_command",
    "is_keyword",
    "response_kind",
]

# RFC 2449 §4: 255 octets including the CRLF.
MAX_COMMAND_LINE = 255


class ResponseKind(enum.Enum):
    SINGLE = "single"  # one status line
    MULTI = "multi"  # status line, then (on +OK only) a dot-terminated body
    SASL = "sasl"  # "+ " challenges until a final status line (AUTH mechanism ...)
    GREETING = "greeting"  # the pseudo-response a connection starts with


# (verb, has_argument) -> kind. -ERR is always single-line whatever the table says.
RESPONSE_KINDS: dict[tuple[str, bool], ResponseKind] = {
    ("USER", True): ResponseKind.SINGLE,
    ("PASS", True): ResponseKind.SINGLE,
    ("APOP", True): ResponseKind.SINGLE,
    ("AUTH", True): ResponseKind.SASL,
    ("AUTH", False): ResponseKind.MULTI,  # RFC 1734-era listing of mechanisms
    ("STLS", False): ResponseKind.SINGLE,
    ("CAPA", False): ResponseKind.MULTI,
    ("UTF8", False): ResponseKind.SINGLE,
    ("LANG", False): ResponseKind.MULTI,
    ("LANG", True): ResponseKind.SINGLE,
    ("STAT", False): ResponseKind.SINGLE,
    ("LIST", False): ResponseKind.MULTI,
    ("LIST", True): ResponseKind.SINGLE,
    ("UIDL", False): ResponseKind.MULTI,
    ("UIDL", True): ResponseKind.SINGLE,
    ("RETR", True): ResponseKind.MULTI,
    ("TOP", True): ResponseKind.MULTI,
    ("DELE", True): ResponseKind.SINGLE,
    ("RSET", False): ResponseKind.SINGLE,
    ("NOOP", False): ResponseKind.SINGLE,
    ("LAST", False): ResponseKind.SINGLE,
    ("QUIT", False): ResponseKind.SINGLE,
}

# Verbs whose arguments are secrets: never echo them in errors.
SECRET_VERBS = frozenset({"PASS", "APOP", "AUTH"})
# Verbs that carry or start credentials: an -ERR to one is a failed login (the client), and a
# policy that requires TLS refuses them on a plain link (the proxy).
LOGIN_VERBS = frozenset({"USER", *SECRET_VERBS})

_FORBIDDEN = (b"\r", b"\n", b"\x00")
# Verbs the table knows are valid keywords by construction: the encoder need not re-check them.
_KNOWN_VERBS = frozenset(verb for verb, _ in RESPONSE_KINDS)


def is_keyword(keyword: bytes | str) -> bool:
    """Whether `keyword` is non-empty printable ASCII (RFC 2449 §3: keyword = 3*4VCHAR).

    Letters alone are too narrow: RFC 6856's `UTF8` has a digit, and a reader that refused it
    would answer a verb the proxy's own CAPA advertises with "no valid keyword". The length
    rule is left to the callers: the encoder insists on 3-4, the reader accepts shorter ones
    and lets "unknown command" answer them.
    """
    codes = keyword if isinstance(keyword, bytes) else [ord(c) for c in keyword]
    return len(codes) > 0 and all(0x21 <= c <= 0x7E for c in codes)


def response_kind(command: Command) -> ResponseKind | None:
    """How the reply to `command` is framed, or None if POP3 does not tell us."""
    return RESPONSE_KINDS.get((command.verb, bool(command.args)))


def encode_command(command: Command) -> bytes:
    """Validate `command` and return its wire form, CRLF included.

    Arguments may not contain CR, LF or NUL (that would let one argument smuggle a second
    command) and may not contain spaces, except the single PASS argument, which RFC 1939 §7
    lets servers read as the rest of the line.
    """
    verb = command.verb
    if verb not in _KNOWN_VERBS and not (
        3 <= len(verb) <= 4 and is_keyword(verb) and verb == verb.upper()
    ):
        raise LocalProtocolError(
            f"invalid POP3 keyword {verb!r}: must be 3-4 printable ASCII characters, upper case"
        )
    parts = [verb.encode("ascii")]
    for arg in command.args:
        if arg.isascii() and arg.isprintable() and arg and " " not in arg:
            # The common case (a message number, a user name): nothing below can refuse it.
            parts.append(arg.encode("ascii"))
            continue
        encoded = arg.encode("utf-8", "surrogateescape")
        where = "an argument" if verb in SECRET_VERBS else f"argument {arg!r}"
        if not encoded:
            raise LocalProtocolError(f"{verb}: {where} is empty")
        if any(bad in encoded for bad in _FORBIDDEN):
            raise LocalProtocolError(f"{verb}: {where} contains CR, LF or NUL")
        if b" " in encoded and verb != "PASS":
            raise LocalProtocolError(f"{verb}: {where} contains a space")
        parts.append(encoded)
    if verb == "PASS" and len(command.args) != 1:
        raise LocalProtocolError("PASS takes exactly one argument")
    line = b" ".join(parts) + b"\r\n"
    if len(line) > MAX_COMMAND_LINE:
        raise LocalProtocolError(
            f"{verb} command line is {len(line)} octets; POP3 allows {MAX_COMMAND_LINE}"
        )
    return line

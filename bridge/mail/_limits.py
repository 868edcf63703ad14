"""Cheap caps checked before the full parse, for header shapes the stdlib parser is slow on.

Parts of the stdlib `email` package take time quadratic in the length of one header field:
the compat32 parameter splitter behind `get_param`/`get_filename` (`email.message._parseparam`,
CPython gh-136063) on `Content-Type: text/plain; a=b; a=b; ...`, the address parser behind
`email.utils.getaddresses` on `To: @@@@...` or `a@b,a@b,...`, and the header value parser's
token loops (same issue). Measured costs are in docs/security.md. Real mail stays far below
every cap here, so a message over one is hostile or broken, and it gets the degraded payload:
headers only (a field over a cap is cut and not decoded), the raw message attached, and a
`parse_errors` entry naming the cap. `over_limits` only scans bytes (regexes and counts,
linear in the message), so it costs microseconds on ordinary mail and never runs the parser.

Worker processes with a CPU-time limit (`bridge.outbox.ParsePool`) catch the shapes nobody
has published yet; these caps keep the known ones from costing a worker seconds.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_ADDRESSES",
    "MAX_ENCODED_WORDS",
    "MAX_FIELD",
    "MAX_HEADER_BLOCK",
    "MAX_PARAMETERS",
    "field_over_limits",
    "over_limits",
]

MAX_HEADER_BLOCK = 1 << 20  # bytes of the top-level header block
MAX_FIELD = 64 * 1024  # bytes of one header field (name, value and folding)
MAX_PARAMETERS = 100  # `;`-separated parameters of one Content-Type / Content-Disposition
MAX_ADDRESSES = 1000  # addresses (counted by `@` and by `,`) in one address field
MAX_ENCODED_WORDS = 1000  # RFC 2047 encoded words (`=?`) in one header field

ADDRESS_FIELDS = frozenset({"from", "sender", "reply-to", "to", "cc", "bcc"})
_PARAMETER_FIELDS = frozenset({"content-type", "content-disposition"})

# One header field with its continuation lines, anchored at a line start.
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.MULTILINE)
# Parameter fields of any part (searched in a lower-cased copy): the walk asks every part for
# its type, charset and filename.
_PART_FIELD = re.compile(rb"\n(content-(?:type|disposition))[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)")


def field_over_limits(name: str, value: str | bytes) -> str | None:
    """Why one header field is over a cap (None when it is not); `name` lower-cased."""
    text = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    size = len(name) + 1 + len(text)
    if size > MAX_FIELD:
        return f"the {name} header is {size} bytes long (the limit is {MAX_FIELD})"
    words = text.count(b"=?")
    if words > MAX_ENCODED_WORDS:
        return f"the {name} header has {words} encoded words (the limit is {MAX_ENCODED_WORDS})"
    if name in _PARAMETER_FIELDS:
        params = text.count(b";")
        if params > MAX_PARAMETERS:
            return f"a {name} header has {params} parameters (the limit is {MAX_PARAMETERS})"
    if name in ADDRESS_FIELDS:
        addresses = max(text.count(b"@"), text.count(b",") + 1)
        if addresses > MAX_ADDRESSES:
            return f"the {name} header has {addresses} addresses (the limit is {MAX_ADDRESSES})"
    return None


def _at_most_semicolons(raw: bytes, start: int) -> bool:
    """Whether raw[start:] has at most MAX_PARAMETERS ";" in it: at most that many + 1 memchr
    searches, instead of a count that reads every byte one by one (4 us for 5 KB)."""
    at = start
    for _ in range(MAX_PARAMETERS + 1):
        at = raw.find(b";", at)
        if at < 0:
            return True
        at += 1
    return False


def _at_most_words(raw: bytes, start: int, end: int | None) -> bool:
    """Whether raw[start:end] has at most MAX_ENCODED_WORDS "=?" in it.

    Counting the two bytes is slow on quoted-printable text, where "=" is everywhere (16 us
    for 5 KB); each "=?" holds its own "?", and counting one byte is four times faster.
    """
    if raw.count(b"?", start, end) <= MAX_ENCODED_WORDS:
        return True
    return raw.count(b"=?", start, end) <= MAX_ENCODED_WORDS


def over_limits(raw: bytes, header_end: int) -> str | None:
    """Why `raw` must not go to the full parser (None when it may), in words for `parse_errors`.

    `header_end` is where the top-level header block ends (`_mime.header_end`).
    """
    if header_end > MAX_HEADER_BLOCK:
        return f"the header block is {header_end} bytes long (the limit is {MAX_HEADER_BLOCK})"
    # The common case costs a few C-speed counts: when the counts over the whole block are
    # under every per-field cap, no field in it can be over one.
    if (
        header_end > MAX_FIELD
        or raw.count(b";", 0, header_end) > MAX_PARAMETERS
        or raw.count(b"@", 0, header_end) > MAX_ADDRESSES
        or raw.count(b",", 0, header_end) >= MAX_ADDRESSES
        or not _at_most_words(raw, 0, header_end)
    ):
        for match in _FIELD.finditer(raw[:header_end].replace(b"\r\n", b"\n")):
            reason = field_over_limits(match[1].lower().decode("ascii"), match[2])
            if reason is not None:
                return reason
    # MIME parts' Content-Type/-Disposition: only their parameters and encoded words are
    # costly (a long quoted filename is not), so the same counts over the body decide.
    if _at_most_semicolons(raw, header_end) and _at_most_words(raw, header_end, None):
        return None
    # HTML with inline styles often has hundreds of ";": then every part's field is looked at.
    # `find` skips to each candidate (the regex alone scanned the body at ~2 ns a byte); the
    # regex then matches there, as `finditer` would have.
    low = raw[header_end - 1 :].lower()
    at = low.find(b"\ncontent-")
    while at >= 0:
        part_field = _PART_FIELD.match(low, at)
        if part_field is None:
            at = low.find(b"\ncontent-", at + 1)
            continue
        reason = field_over_limits(part_field[1].decode("ascii"), part_field[2])
        if reason is not None:
            return f"{reason} in a MIME part"
        at = low.find(b"\ncontent-", part_field.end())
    return None

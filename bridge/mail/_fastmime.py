"""The feed parser's Message tree for ordinary mail, built from the bytes without it.

The stdlib feed parser reads a message line by line in Python (a generator, a deque, an
end-of-part check per line per nesting level): about 100 us of a 5 KB message, a third of the
poller's parse. Ordinary mail has a simple shape: a header block of plain field lines, a blank
line, and either one body or a multipart whose delimiter lines are the only lines starting
with "--" that look like one. For those, `parse` finds the few structural lines with C-speed
searches and builds the very `Message` objects the feed parser would: the same header
(name, value) pairs, payload strings, preambles, epilogues and default types, and no defects.

Anything it is not sure of makes it return None, and the caller runs the feed parser: a field
line that is not `name: value` or a continuation, an mbox "From " line, 8-bit or control bytes
in a header block, a bare CR anywhere a line boundary matters, a missing blank line, message/*
and multipart/digest parts, a boundary (as `get_boundary` gives it, like the parser) that is
empty or not printable ASCII, a multipart transfer encoding other than 7bit/8bit/binary, a
missing first or closing delimiter, two delimiter lines in a row, a line that would end an
enclosing part, or nesting deeper than a few levels. The feed parser records a defect for most
of those, or does something subtle; the payload builder reads defects and subtleties only from
its output.

tests/mail/test_mail_fast_parse.py compares the two trees (and the whole payload built from
them) on the corpora, on generated mail of the common shapes and on hostile near-misses.
"""

from __future__ import annotations

import re
from email.message import Message
from email.policy import Policy

__all__ = ["parse"]

# Field lines (a name of printable ASCII but ":", then ":", then printable ASCII or tab) each
# with its continuation lines; the whole run of them from a part's first line. CR only before
# LF, no 8-bit and no control bytes: line readers (and Python versions) differ on those.
# `endpos` keeps it inside the part.
_FIELDS = re.compile(
    rb"(?:[\x21-\x39\x3b-\x7e]+:[\t\x20-\x7e]*\r?\n(?:[ \t][\t\x20-\x7e]*\r?\n)*)*"
)
# What may follow "--" + boundary on a delimiter line (the feed parser's pattern, as bytes).
_AFTER = re.compile(rb"(--)?[ \t]*(\r\n|\n)?")
# Boundaries taken as they are: printable ASCII without anything a parameter parser treats
# specially once unquoted.
_PLAIN_BOUNDARY = re.compile(r"[\x20-\x7e]{1,200}")
_MAX_DEPTH = 8
_PLAIN_CTE = ("7bit", "8bit", "binary")


class _StepAside(Exception):
    """Not a shape this module is sure of: the feed parser decides."""


def parse(raw: bytes, policy: Policy) -> Message | None:
    """The feed parser's `Message` for `raw` under `policy`, or None to let it parse."""
    try:
        msg, _ = _entity(raw, 0, len(raw), (), policy, False, 0)
    except Exception:  # _StepAside, or a header the parser's own helpers choke on
        return None
    return msg


def _entity(
    raw: bytes,
    start: int,
    end: int,
    outer: tuple[bytes, ...],
    policy: Policy,
    chomp: bool,
    depth: int,
) -> tuple[Message, bool]:
    """The part in raw[start:end] (outer delimiters excluded); True if it is a multipart.

    With `chomp`, a leaf's payload loses its last line end: it belongs to the delimiter that
    follows (RFC 2046 §5.1.1); a multipart's epilogue is the caller's to trim.
    """
    fields = _FIELDS.match(raw, start, end)
    assert fields is not None  # the pattern matches the empty string
    body = fields.end()
    text = raw[start:body].decode("ascii")
    if raw.startswith(b"\r\n", body) and body + 2 <= end:
        body += 2
    elif raw.startswith(b"\n", body) and body + 1 <= end:
        body += 1
    else:
        raise _StepAside  # no blank line: a defect, or a header block ending at a boundary
    msg = Message(policy)
    msg._headers = _headers(text)  # type: ignore[attr-defined]
    maintype = msg.get_content_maintype()
    if maintype == "message":
        raise _StepAside
    if maintype != "multipart":
        if chomp and raw.endswith(b"\n", body, end):
            end -= 2 if raw.endswith(b"\r\n", body, end) else 1
        msg._payload = _decode(raw, body, end)  # type: ignore[attr-defined]
        return msg, False
    if depth >= _MAX_DEPTH or msg.get_content_subtype() == "digest":
        raise _StepAside
    _multipart(msg, raw, body, end, outer, policy, depth)
    return msg, True


def _headers(text: str) -> list[tuple[str, str]]:
    """compat32's (name, value) pairs of a checked header block: the value is what follows the
    colon with leading blanks dropped, continuation lines kept as they are, and trailing line
    end characters removed."""
    lines = text.split("\n")
    lines.pop()  # the block ends with a line end
    if "\n " in text or "\n\t" in text:
        fields: list[list[str]] = []
        for line in lines:
            if line[0] in " \t":
                fields[-1].append(line)
            else:
                fields.append([line])
        lines = ["\n".join(field) for field in fields]  # linear however many continuations
    out = []
    for line in lines:
        name, _, value = line.partition(":")
        out.append((name, value.lstrip(" \t").rstrip("\r\n")))
    return out


def _multipart(
    msg: Message,
    raw: bytes,
    body: int,
    end: int,
    outer: tuple[bytes, ...],
    policy: Policy,
    depth: int,
) -> None:
    boundary = msg.get_boundary()
    if not isinstance(boundary, str) or _PLAIN_BOUNDARY.fullmatch(boundary) is None:
        raise _StepAside
    if str(msg.get("content-transfer-encoding", "8bit")).lower() not in _PLAIN_CTE:
        raise _StepAside
    separator = b"--" + boundary.encode("ascii")
    # (line start, line end, is the close delimiter) of this level's delimiter lines.
    delimiters: list[tuple[int, int, bool]] = []
    if raw.find(b"\r--", body, end) >= 0:
        raise _StepAside  # a bare CR starts a line for the parser: maybe a delimiter line
    at = raw.find(b"\n--", body - 1, end)
    while at >= 0:
        line_start = at + 1
        line_end = raw.find(b"\n", line_start, end) + 1 or end
        line = raw[line_start:line_end]
        if line.count(b"\r") != line.endswith(b"\r\n"):
            raise _StepAside  # a bare CR ends a line for the parser
        for sep in outer:
            if line.startswith(sep) and _AFTER.fullmatch(line, len(sep)) is not None:
                raise _StepAside  # it would end an enclosing part early
        if line.startswith(separator):
            after = _AFTER.fullmatch(line, len(separator))
            if after is not None:
                delimiters.append((line_start, line_end, after[1] is not None))
        at = raw.find(b"\n--", line_end - 1, end)
    if not delimiters or delimiters[0][2]:
        raise _StepAside  # no first delimiter (or the close one first)
    first = delimiters[0][0]
    if first > body:
        msg.preamble = _chomp(_decode(raw, body, first))
    inner = (*outer, separator)
    children: list[Message] = []
    for at, (_, line_end, close) in enumerate(delimiters):
        if close:
            break
        if at + 1 == len(delimiters):
            raise _StepAside  # no close delimiter
        next_start = delimiters[at + 1][0]
        if next_start == line_end:
            raise _StepAside  # delimiters in a row: the parser skips them all
        child, nested = _entity(raw, line_end, next_start, inner, policy, True, depth + 1)
        if nested:  # the line end before a delimiter belongs to the delimiter
            epilogue = child.epilogue
            child.epilogue = None if epilogue == "" else _chomp(epilogue) if epilogue else epilogue
        children.append(child)
    # Everything after the close delimiter's line is the epilogue.
    msg.epilogue = _decode(raw, delimiters[len(children)][1], end)
    msg._payload = children  # type: ignore[attr-defined]


def _decode(raw: bytes, start: int, end: int) -> str:
    """raw[start:end] as the feed parser holds it, without a bytes copy of a big body first."""
    if end - start < 4096:
        return raw[start:end].decode("ascii", "surrogateescape")
    return str(memoryview(raw)[start:end], "ascii", "surrogateescape")


def _chomp(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text

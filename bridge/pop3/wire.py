"""Byte-level POP3 framing: dot-stuffing, the response framer and the server-side command reader.

No sockets here: callers feed bytes with `receive_data` (b"" means end of input) and pull events
with `next_event`, which returns `NEED_DATA` when it needs more input.

Line endings
------------
Only CRLF ends a line. In particular only CRLF "." CRLF ends a multi-line response: a body
holding "\\n.\\r\\n", "\\r\\n.\\n" or "\\r.\\r\\n" is content, never a terminator, so a message
cannot end its own response early and smuggle a fake reply in after it (RFC 1939 §3; the same
ambiguity as SMTP smuggling).

One exception, detected rather than assumed: a server that ends its *greeting* with a bare LF is
taken to use bare LF throughout (some embedded and test servers do). For such a server, and only
then, the framer switches to LF framing: LF ends lines and "." LF (or "." CRLF) ends a body. The
choice is made once per connection from the greeting; `ResponseFramer(line_ending="crlf")` turns
detection off and `"lf"` forces LF framing (for a proxy leg whose greeting was consumed
elsewhere).

Bounds
------
Status lines may exceed RFC 1939's 512 octets (real servers do) up to `max_status_line`
(8 KiB by default); beyond that the server is broken and `RemoteProtocolError` is raised. A
CRLF server may send a stray empty LF line before a status line (seen in the field); up to
`MAX_STRAY_LF` of them in a row are skipped, more mean the server is broken
(`RemoteProtocolError`), so a flood of LFs costs one bounded loop, never a deep stack. Body
lines have no length limit: bodies stream out as `DataChunk`s as soon as bytes arrive, so the
framer holds at most one read plus four bytes of a possible split terminator. Sizes from LIST
are never used to find the end of a message.

Span mode
---------
Most responses in a mailbox session are plain: "+OK" or "-ERR", no response code, CRLF, at most
`PLAIN_STATUS_LINE` octets, and for a multi-line +OK a body ended by CRLF "." CRLF. For those
`ResponseFramer.next_span` frames the head response in place, without event objects: it moves
the end of the framed bytes (`span_end`) over the response and says what it found (`SPAN_OK`,
`SPAN_ERR`, `SPAN_PART` for the head of a body whose end is still to come, `SPAN_NEED`). The
bytes stay in the buffer until the caller takes them: a run of responses as one slice
(`take_span`, the proxy relaying them), the body of one whole response un-stuffed in one piece
(`take_body`, the client), or the bodies of every whole plain +OK response already buffered
(`take_bodies`, the client reading a batch: one search per body finds its stuffed lines and its
end). Anything else — a response code, a stray LF, a CR or NUL, a longer line, a SASL or
greeting line, LF framing, the end of input before the end of a response — is `SPAN_EVENTS`:
the caller takes what was framed and asks `next_event`, which applies the rules above and
raises what they raise. Both modes share the expectation queue and the body state, so a caller
may switch between them at any response boundary and inside a body started in span mode; where
a response ends and what its bytes are is the same either way (tests/pop3/test_span_mode.py
compares them over arbitrary chunkings).

Why one module (about 720 lines): it is every rule about where a POP3 line or body ends, for
both directions — as h11 keeps all its readers in one `_readers.py` — over one receive buffer
type: the response framer's two modes, the command reader with its plain-line read
(`CommandReader.next_plain`, the proxy's pass-through for client lines), the terminator search
(`body_end`) and (un)stuffing. Split, the span mode and the events, or the plain-line read
and the reader's line limits, would sit in different files while each must agree with the
other octet for octet; what is not framing (commands, responses, state) is already elsewhere.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Collection
from typing import Literal

from bridge.pop3.commands import ResponseKind, is_keyword
from bridge.pop3.errors import (
    BadCommandLine,
    ConnectionLost,
    LocalProtocolError,
    RemoteProtocolError,
)
from bridge.pop3.events import (
    NEED_DATA,
    AuthResponseLine,
    Command,
    ConnectionClosed,
    Continuation,
    DataChunk,
    EndOfMultiline,
    Event,
    Greeting,
    NeedData,
)
from bridge.pop3.responses import apop_timestamp, parse_status_line

__all__ = [
    "DEFAULT_MAX_STATUS_LINE",
    "MAX_STRAY_LF",
    "PLAIN_STATUS_LINE",
    "SPAN_ERR",
    "SPAN_EVENTS",
    "SPAN_NEED",
    "SPAN_OK",
    "SPAN_PART",
    "CommandReader",
    "ResponseFramer",
    "body_end",
    "dot_stuff",
    "dot_unstuff",
]

DEFAULT_MAX_STATUS_LINE = 8192
# Stray LFs skipped before one status line; a few are a quirk, thousands are a broken server.
MAX_STRAY_LF = 8
_TERMINATOR = b".\r\n"
# The longest status line span mode takes, CRLF included (RFC 1939 §3); longer ones are events.
PLAIN_STATUS_LINE = 512

# What `ResponseFramer.next_span` found: plain ints, as it runs once per response on hot paths.
SPAN_NEED = 0  # nothing more could be framed: feed more bytes
SPAN_EVENTS = 1  # the next piece is not a plain response: take the span, then `next_event`
SPAN_OK = 2  # a whole +OK response was framed
SPAN_ERR = 3  # a whole -ERR response was framed
SPAN_PART = 4  # a +OK multi-line response was framed up to `span_end`; its end is to come

LineEnding = Literal["auto", "crlf", "lf"]
# A command line `CommandReader.next_plain` reads without an event object: a 1-4 letter
# keyword, up to two printable arguments of at most 64 characters (so logged as they are), CRLF.
# What `next_event` would make of such a line is plain; any other line is left to it.
_PLAIN_COMMAND = re.compile(rb"([A-Za-z]{1,4})(?: ([!-~]{1,64}))?(?: ([!-~]{1,64}))?\r\n")
# Enum members looked up once: `ResponseKind.X` costs a metaclass lookup per use (span mode's
# check runs once per response).
_SINGLE = ResponseKind.SINGLE
_MULTI = ResponseKind.MULTI


def body_end(buf: bytes | bytearray, start: int, *, lf: bool) -> tuple[int, int]:
    """Find the end of a multi-line body in `buf[start:]`, which begins mid-body.

    Returns `(terminator, safe)`. `terminator` is where the line break before the "." line
    starts (CRLF "." CRLF, or with `lf` LF "." LF / LF "." CRLF), or -1 when it is not there
    yet; then `safe` is how far the bytes are certainly body: a tail that may be the start of
    a terminator split across reads is held back. One C-speed search; dot-stuffed lines cost
    nothing extra. The framer and the proxy's pass-through path both end bodies with this.
    """
    if lf:
        found = [i for i in (buf.find(b"\n.\n", start), buf.find(b"\n.\r\n", start)) if i >= 0]
        terminator = min(found) if found else -1
    else:
        terminator = buf.find(b"\r\n.\r\n", start)
    if terminator >= 0:
        return terminator, terminator
    term = b"\n." if lf else b"\r\n."
    safe = len(buf)
    if buf.endswith(term, start):
        safe -= 1
    elif buf.endswith(term + b"\r", start):
        safe -= 2
    elif not lf and buf.endswith(b"\r", start):
        safe -= 1
    return -1, safe


def dot_stuff(data: bytes) -> bytes:
    """Turn a message into a multi-line body exactly as it goes on the wire.

    Line endings are left as they are (a server relays stored bytes; rewriting them would change
    signatures and hashes), so only CRLF counts as a line break: a '.' after a bare LF is not at
    the start of a line for a CRLF-framed reader and must not be doubled, or un-stuffing would
    not give back the original bytes.
    """
    body = data.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + _TERMINATOR


def dot_unstuff(body: bytes) -> bytes:
    """Inverse of `dot_stuff` for a complete wire body (terminator included or not).

    Removes exactly one leading dot from every CRLF-started line. Raises `RemoteProtocolError`
    if a "." line appears before the end, since that would have ended the response there.
    """
    if body.endswith(b"\r\n.\r\n"):
        body = body[:-3]
    elif body == _TERMINATOR:
        body = b""
    if body.startswith(b".\r\n") or body.find(b"\r\n.\r\n") >= 0:
        raise RemoteProtocolError("a lone '.' line inside the body would end the response early")
    return _unstuff(body, 0, len(body))


def _unstuff(buf: bytes | bytearray, start: int, stop: int) -> bytes:
    """Un-stuff `buf[start:stop]`, a body known to hold no "." line: one leading dot off every
    CRLF-started line (and off the first line). `dot_unstuff` and span mode's `take_body`.

    One search per stuffed line and one copy of the body, joined from slices of `buf`: no
    intermediate copy, and mail without lines starting with "." costs one search and one copy.
    """
    at = start + 1 if buf[start : start + 1] == b"." else start
    hit = buf.find(b"\r\n.", at, stop)
    if hit < 0:
        return bytes(memoryview(buf)[at:stop])
    view = memoryview(buf)
    pieces = []
    while hit >= 0:
        pieces.append(view[at : hit + 2])
        at = hit + 3
        hit = buf.find(b"\r\n.", at, stop)
    pieces.append(view[at:stop])
    body = b"".join(pieces)
    del pieces, view  # release `buf` (a bytearray cannot be resized while it is viewed)
    return body


def _whole_body(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """The body starting at `buf[start]`, un-stuffed, and where its terminator ends; None
    while the terminator is not in `buf`.

    The same body and end as the terminator search plus `_unstuff`, in one search: every CRLF
    "." is either the terminator (CRLF follows) or a stuffed line, whose dot goes. A first line
    starting with "." is the terminator or stuffed too (the status line's CRLF precedes it).
    """
    at = start
    if buf.startswith(b".", start):
        if buf.startswith(b".\r\n", start):
            return b"", start + 3
        at = start + 1
    hit = buf.find(b"\r\n.", at)
    if hit < 0:
        return None
    view = memoryview(buf)
    pieces: list[memoryview] = []
    while hit >= 0:
        if buf.startswith(b"\r\n", hit + 3):
            if not pieces:
                return bytes(view[at : hit + 2]), hit + 5
            pieces.append(view[at : hit + 2])
            return b"".join(pieces), hit + 5
        pieces.append(view[at : hit + 2])
        at = hit + 3
        hit = buf.find(b"\r\n.", at)
    return None


class _ReceiveBuffer:
    """Bytes received but not yet framed, shared by both framers: how much is waiting, and a
    way to take it all back (STLS must not carry plaintext bytes into the TLS session)."""

    _buf: bytearray
    _search_from: int  # resumable search offset into `_buf`

    def buffered(self) -> int:
        """Bytes received but not yet turned into events (e.g. to refuse data sent before TLS)."""
        return len(self._buf)

    def discard_buffer(self) -> bytes:
        """Drop and return everything buffered, e.g. when the transport switches to TLS."""
        data = bytes(self._buf)
        self._buf.clear()
        self._search_from = 0
        return data


class ResponseFramer(_ReceiveBuffer):
    """Frames a server's responses, given (in order) what kind of response each command gets.

    Role-agnostic: the client uses it through `ClientConnection`; a proxy uses it directly on its
    upstream leg, calling `expect(kind)` for every command it forwards (`response_kind` in
    `bridge.pop3.commands` tells the kind). The first expectation is the greeting unless
    `expect_greeting=False`.

    `unstuff` may be set to False by a caller that forwards bodies as they are (a proxy with no
    tap on this response): body chunks then carry the wire bytes as `data` too, and the only
    work left per chunk is the terminator search. Where a body ends does not depend on it.
    """

    def __init__(
        self,
        *,
        line_ending: LineEnding = "auto",
        max_status_line: int = DEFAULT_MAX_STATUS_LINE,
        expect_greeting: bool = True,
    ) -> None:
        self._buf = bytearray()
        self._eof = False
        self._line_ending: LineEnding = line_ending
        self._max_status = max_status_line
        self._queue: deque[ResponseKind] = deque()  # what each awaited response is
        # Body state: None when between responses, else True/False = at the start of a line.
        self._in_body = False
        self._line_start = True
        self._search_from = 0  # resumable search offset for the current status line
        self._stray = 0  # stray LFs skipped before the current status line
        # Span mode: octets framed but not yet taken (read it, never set it), where the body of
        # the last framed multi-line response starts (-1: single-line), where to resume the
        # search for a body's end.
        self.span_end = 0
        self._body_start = -1
        self._span_scan = 0
        self.unstuff = True
        if expect_greeting:
            self._queue.append(ResponseKind.GREETING)

    # -- feeding ---------------------------------------------------------------------------
    def expect(self, kind: ResponseKind) -> None:
        """Record that a command was sent whose response will be framed as `kind`."""
        self._queue.append(kind)

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        else:
            self._buf += data

    def discard_buffer(self) -> bytes:
        """Drop and return everything buffered (framed in span mode or not)."""
        self.span_end = self._span_scan = 0
        self._body_start = -1
        return super().discard_buffer()

    @property
    def outstanding(self) -> int:
        """How many responses (including the greeting) are still expected."""
        return len(self._queue)

    @property
    def bare_lf(self) -> bool:
        return self._line_ending == "lf"

    @property
    def eof(self) -> bool:
        return self._eof

    @property
    def in_body(self) -> bool:
        return self._in_body

    # -- events ----------------------------------------------------------------------------
    def next_event(self) -> Event | NeedData:
        if self.span_end:
            raise LocalProtocolError("take_span() or take_body() before asking for events")
        if self._in_body:
            return self._body_event()
        if not self._queue:
            if self._buf:
                extra = bytes(self._buf[:60])
                raise RemoteProtocolError(f"server sent bytes nobody asked for: {extra!r}")
            if self._eof:
                return ConnectionClosed()
            return NEED_DATA
        line = self._take_line()
        if line is None:
            return NEED_DATA
        content, raw = line
        head = self._queue[0]
        if (
            head is ResponseKind.SASL
            and content.startswith(b"+")
            and not (content.startswith(b"+OK") and (len(content) == 3 or content[3:4] == b" "))
        ):
            # "+ base64" challenge; a bare "+" (no space) is tolerated as an empty challenge.
            if content[1:2] not in (b"", b" "):
                raise RemoteProtocolError(f"malformed SASL challenge {content[:40]!r}")
            return Continuation(content[2:].decode("ascii", "replace"), raw)
        status = parse_status_line(content, raw)
        self._queue.popleft()
        if head is ResponseKind.GREETING:
            return Greeting(status, apop_timestamp(content), self.bare_lf)
        if status.ok and head is ResponseKind.MULTI:
            self._in_body = True
            self._line_start = True
            self._span_scan = 0  # span mode may go on with this body: search it all
        return status

    def _take_line(self) -> tuple[bytes, bytes] | None:
        buf = self._buf
        while True:
            nl = buf.find(b"\n", self._search_from)
            if nl < 0:
                if len(buf) > self._max_status:
                    raise RemoteProtocolError(
                        f"status line longer than {self._max_status} octets without a line end"
                    )
                if self._eof:
                    raise ConnectionLost(self._lost_message())
                self._search_from = len(buf)
                return None
            self._search_from = 0
            if nl + 1 > self._max_status:
                raise RemoteProtocolError(f"status line longer than {self._max_status} octets")
            crlf = nl > 0 and buf[nl - 1] == 0x0D
            if self._line_ending == "auto":
                # Decided once, from the first line the server sends.
                self._line_ending = "crlf" if crlf else "lf"
            raw = bytes(buf[: nl + 1])
            del buf[: nl + 1]
            content = raw[:-2] if crlf else raw[:-1]
            if not crlf and self._line_ending == "crlf":
                if content:
                    raise RemoteProtocolError(f"status line ended by a bare LF: {content[:60]!r}")
                # A stray LF before a status line (seen in the field): skip a few.
                self._stray += 1
                if self._stray > MAX_STRAY_LF:
                    raise RemoteProtocolError(
                        f"more than {MAX_STRAY_LF} stray line feeds before a status line"
                    )
                continue
            # Byte values, not b"\r": CPython's `bytes in bytes` first tries the operand as an
            # int and formats (then drops) a TypeError, every status line.
            if 13 in content or 0 in content:
                raise RemoteProtocolError(f"status line contains CR or NUL: {content[:60]!r}")
            self._stray = 0
            return content, raw

    # -- span mode -------------------------------------------------------------------------
    def next_span(self, *, whole: bool = False, ok_only: bool = False) -> int:
        """Frame the head response in span mode (see the module docstring); one `SPAN_*` value.

        With `whole`, a multi-line response is framed only once its end is in the buffer (the
        caller wants its body in one piece): until then `span_end` stays after its status line
        and the answer is `SPAN_PART` once, then `SPAN_NEED`. Without it, body bytes are framed
        as they arrive, up to a possibly split terminator, and each step that framed some is
        `SPAN_PART`. With `ok_only`, a -ERR line is left to `next_event`.
        """
        if self._in_body:
            return self._span_body_step(whole)
        buf = self._buf
        pos = self.span_end
        queue = self._queue
        if not queue:
            return SPAN_EVENTS if len(buf) > pos or self._eof else SPAN_NEED
        kind = queue[0]
        if (
            (kind is not _SINGLE and kind is not _MULTI)
            or self._line_ending != "crlf"
            or self._stray
        ):
            return SPAN_EVENTS
        found, body = self._plain_status(pos, ok_only)
        if found < SPAN_OK:
            return found
        self.span_end = body
        queue.popleft()  # as `next_event` does: a body belongs to no expectation
        if found == SPAN_ERR or kind is not _MULTI:
            self._body_start = -1
            return found
        self._body_start = body
        if not buf.startswith(b".", body):
            # The usual case, a body already all here: one search (its end cannot start
            # before the body, as the body's first octet is not the terminator's ".").
            end = buf.find(b"\r\n.\r\n", body)
            if end >= 0:
                self.span_end = end + 5
                return SPAN_OK
        self._in_body = True
        self._line_start = True
        self._span_scan = body
        found = self._span_body_step(whole)
        return SPAN_PART if found == SPAN_NEED else found

    def _plain_status(self, pos: int, ok_only: bool) -> tuple[int, int]:
        """The status line at `pos`, if plain (module docstring): `(SPAN_OK or SPAN_ERR, where
        the line ends)`, else `(SPAN_NEED or SPAN_EVENTS, pos)`. Span mode's only line rules."""
        buf = self._buf
        nl = buf.find(b"\n", pos, pos + PLAIN_STATUS_LINE)
        if nl < 0:
            if len(buf) - pos >= PLAIN_STATUS_LINE or self._eof:
                return SPAN_EVENTS, pos
            return SPAN_NEED, pos
        cr = nl - 1
        if (
            cr < pos
            or buf[cr] != 0x0D
            or buf.find(b"\r", pos, cr) >= 0
            or buf.find(b"\x00", pos, cr) >= 0
        ):
            return SPAN_EVENTS, pos
        if buf.startswith(b"+OK", pos):
            found, rest = SPAN_OK, pos + 3
        elif not ok_only and buf.startswith(b"-ERR", pos):
            found, rest = SPAN_ERR, pos + 4
        else:
            return SPAN_EVENTS, pos
        # The token, then nothing or a space and text that is not a [response code].
        if rest != cr and (buf[rest] != 0x20 or buf.startswith(b"[", rest + 1)):
            return SPAN_EVENTS, pos
        return found, nl + 1

    def take_bodies(self, most: int) -> list[bytes]:
        """Up to `most` whole plain +OK responses from the head of the buffer, as their bodies
        un-stuffed (b"" for a single-line one), removed from the buffer: what `next_span(whole=
        True, ok_only=True)` and `take_body` give one at a time, for a client reading a batch.

        Stops before the first response that is not plain, or not all here yet, and leaves it
        as it was for `next_span` / `next_event`; [] when the head is such a response, or when
        a response is already being framed (`span_end`, `in_body`). Each body costs one search
        for CRLF "." (`_whole_body`), which finds its stuffed lines and its end together, and
        the buffer is cut once for the whole run.
        """
        if self.span_end or self._in_body or self._line_ending != "crlf" or self._stray:
            return []
        queue = self._queue
        bodies: list[bytes] = []
        pos = 0
        for kind in queue:
            if len(bodies) >= most or (kind is not _SINGLE and kind is not _MULTI):
                break
            found, body = self._plain_status(pos, True)
            if found != SPAN_OK:
                break
            if kind is _SINGLE:
                bodies.append(b"")
                pos = body
                continue
            whole = _whole_body(self._buf, body)
            if whole is None:
                break
            bodies.append(whole[0])
            pos = whole[1]
        if pos:
            for _ in bodies:
                queue.popleft()
            del self._buf[:pos]
            self._search_from = self._span_scan = 0
        return bodies

    def _span_body_step(self, whole: bool) -> int:
        buf = self._buf
        pos = self.span_end  # the first body byte not yet framed
        if self._line_start and buf.startswith(b".", pos):
            if buf.startswith(b".\r\n", pos):
                self.span_end = pos + 3
                self._in_body = False
                return SPAN_OK
            left = len(buf) - pos
            if left == 1 or (left == 2 and buf[pos + 1] == 0x0D):
                # "." or ".\r": the end, or a stuffed line; cannot tell yet.
                return SPAN_EVENTS if self._eof else SPAN_NEED
        if whole:
            scan = self._span_scan
            terminator = buf.find(b"\r\n.\r\n", pos if pos > scan else scan)
            if terminator < 0:
                # Resume where a split terminator could start: at most four octets back.
                self._span_scan = max(pos, len(buf) - 4)
                return SPAN_EVENTS if self._eof else SPAN_NEED
        else:
            terminator, safe = body_end(buf, pos, lf=False)
        if terminator >= 0:
            self.span_end = terminator + 5
            self._in_body = False
            return SPAN_OK
        if safe > pos:
            self.span_end = self._span_scan = safe
            self._line_start = buf.startswith(b"\r\n", safe - 2) and safe - pos >= 2
            return SPAN_PART
        return SPAN_EVENTS if self._eof else SPAN_NEED

    def take_span(self) -> bytes:
        """The octets framed since the last take, as they came, removed from the buffer."""
        buf = self._buf
        end = self.span_end
        data = bytes(memoryview(buf)[:end])
        del buf[:end]
        self.span_end = 0
        self._span_scan = self._span_scan - end if self._span_scan > end else 0
        self._body_start = -1
        self._search_from = 0
        return data

    def take_body(self) -> bytes:
        """The body of the whole +OK response `next_span` just framed, un-stuffed (b"" for a
        single-line one); everything framed is removed from the buffer.

        Un-stuffed straight from the buffer (the terminator left out) by `_unstuff`, as
        `dot_unstuff` does.
        """
        start, end = self._body_start, self.span_end
        body = _unstuff(self._buf, start, end - 3) if start >= 0 else b""
        self._drop_span()
        return body

    def _drop_span(self) -> None:
        end = self.span_end
        if end:
            del self._buf[:end]
            self.span_end = 0
            self._span_scan = max(0, self._span_scan - end)
            self._body_start = -1
            self._search_from = 0

    def _lost_message(self) -> str:
        if self._queue and self._queue[0] is ResponseKind.GREETING:
            return "connection closed before the server sent its greeting"
        return "connection closed in the middle of a response"

    def _body_event(self) -> Event | NeedData:
        buf = self._buf
        lf = self._line_ending == "lf"
        sep = b"\n" if lf else b"\r\n"
        if self._line_start and buf[:1] == b".":
            if buf.startswith(b".\r\n") or (lf and buf.startswith(b".\n")):
                size = 2 if buf[1] == 0x0A else 3
                raw = bytes(buf[:size])
                del buf[:size]
                self._in_body = False
                return EndOfMultiline(raw)
            if len(buf) == 1 or (len(buf) == 2 and buf[1] == 0x0D):
                return self._need_body_data()  # "." or ".\r": cannot tell yet
        term = sep + b"."
        terminator, end = body_end(buf, 0, lf=lf)
        if terminator >= 0:
            end = terminator + len(sep)  # keep the line break; the "." line: at line start
        if end <= 0:
            return self._need_body_data()
        raw = bytes(buf[:end])
        del buf[:end]
        if self.unstuff:
            data = raw.replace(term, sep)
            if self._line_start and data[:1] == b".":
                data = data[1:]
        else:
            data = raw
        self._line_start = raw.endswith(sep)
        return DataChunk(data, raw)

    def _need_body_data(self) -> NeedData:
        if self._eof:
            raise ConnectionLost("connection closed in the middle of a multi-line response")
        return NEED_DATA


class CommandReader(_ReceiveBuffer):
    """Reads command lines a POP3 client sends (for a proxy's client leg or a test server).

    Lines are limited to `max_line` octets including the line end (RFC 2449 §4: 255). A line with
    NUL, a bare CR, no keyword, or over the limit raises `BadCommandLine` after the reader has
    skipped to the next line end, so the caller can answer -ERR and carry on in sync. A bare LF
    ends a line like CRLF does (common clients and servers accept it), and `raw` keeps what was
    sent.

    After the caller has answered a SASL challenge it calls `expect_auth_response()`: the next
    line is then returned as an `AuthResponseLine` and may be up to `max_auth_line` octets
    (RFC 5034 §4 lets base64 responses exceed the command limit).
    """

    def __init__(self, *, max_line: int = 255, max_auth_line: int = 64 * 1024) -> None:
        self._buf = bytearray()
        self._eof = False
        self._max_line = max_line
        self._max_auth_line = max_auth_line
        self._search_from = 0
        self._skipping = False
        self._auth_expected = False

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        else:
            self._buf += data

    def expect_auth_response(self) -> None:
        self._auth_expected = True

    def next_plain(
        self, verbs: Collection[str]
    ) -> tuple[str, tuple[str, ...], bytes] | NeedData | None:
        """The next line as (verb, arguments, raw), read without an event object, when it is a
        plain command (`_PLAIN_COMMAND`) whose upper-cased verb is one of `verbs`.

        `NEED_DATA`: the line is not all here and may still be plain. None: read it with
        `next_event` (any other line, and every line while a long one is being skipped or a
        SASL answer is due). Either way the line means the same: a proxy may ask this first
        for every line (tests/proxy/test_relay_fast_path.py compares both ways).
        """
        if self._skipping or self._auth_expected:
            return None
        buf = self._buf
        match = _PLAIN_COMMAND.match(buf)
        if match is None:
            if not buf or (buf.find(b"\n") < 0 and len(buf) <= self._max_line):
                return None if self._eof else NEED_DATA
            return None
        verb = match[1].decode("ascii").upper()
        if verb not in verbs:
            return None
        raw = bytes(match[0])
        args = tuple(a.decode("ascii") for a in match.groups()[1:] if a is not None)
        del buf[: match.end()]
        self._search_from = 0
        return verb, args, raw

    def next_event(self) -> Command | AuthResponseLine | ConnectionClosed | NeedData:
        buf = self._buf
        limit = self._max_auth_line if self._auth_expected else self._max_line
        nl = buf.find(b"\n", self._search_from)
        if nl < 0:
            if self._skipping or len(buf) > limit:
                # Drop what we have of the over-long line but remember we are inside it.
                was_skipping = self._skipping
                buf.clear()
                self._search_from = 0
                self._skipping = True
                if not was_skipping:
                    raise BadCommandLine(
                        f"command line longer than {limit} octets", reason="too-long"
                    )
            else:
                self._search_from = len(buf)
            if self._eof:
                return ConnectionClosed()
            return NEED_DATA
        self._search_from = 0
        raw = bytes(buf[: nl + 1])
        del buf[: nl + 1]
        if self._skipping:
            self._skipping = False
            return self.next_event()
        if len(raw) > limit:
            raise BadCommandLine(f"command line longer than {limit} octets", reason="too-long")
        line = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        if b"\x00" in line:
            raise BadCommandLine("command line contains NUL", reason="nul")
        if b"\r" in line:
            raise BadCommandLine("command line contains a bare CR", reason="bare-cr")
        if self._auth_expected:
            self._auth_expected = False
            return AuthResponseLine(line.decode("ascii", "replace"), raw)
        keyword, _, rest = line.partition(b" ")
        # RFC 2449 §3: keyword = 3*4VCHAR. Digits are legal (RFC 6856's UTF8), so is any
        # printable ASCII; a keyword nobody defined is the caller's "unknown command", not a
        # malformed line. Shorter keywords are read too and left to the same verdict.
        if not keyword or len(keyword) > 4 or not is_keyword(keyword):
            raise BadCommandLine("command line has no valid keyword", reason="bad-keyword")
        verb = keyword.decode("ascii").upper()
        text = rest.decode("utf-8", "surrogateescape")
        if verb == "PASS":
            args: tuple[str, ...] = (text,) if rest else ()
        else:
            args = tuple(text.split(" ")) if rest else ()
        return Command(verb, args, raw)

"""MIME tree -> body text, body HTML and attachments.

Parsing uses the stdlib feed parser with the compat32 policy: it never raises on malformed
structure (it records `defects` instead), it is several times faster than the modern policy,
and it keeps header values raw so `_headers` decides how to decode them. We feed it in
chunks ourselves because `BytesParser.parsebytes` first copies the whole message into a str
and then into a StringIO, which for a 50 MB message is several hundred MB of peak memory.

Body rules (also documented in the JSON Schema):
- a text/plain or text/html leaf is body text unless it is `Content-Disposition: attachment`
  or carries a file name; anything else (including message/rfc822) is an attachment;
- in multipart/alternative the last child that has plain text supplies `text` and the last
  child that has HTML supplies `html` (RFC 2046 §5.1.4: later alternatives are preferred);
- everywhere else, several body parts of one kind are joined in document order with one
  newline between them (added only if the previous part does not already end in one);
- line endings in text and HTML are normalised to "\n"; NUL characters are kept as U+0000
  (JSON carries them as "\\u0000"; dropping them would silently alter content).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.feedparser import FeedParser
from email.generator import BytesGenerator
from email.message import Message
from email.policy import Compat32
from typing import Any

from bridge.mail import _boundary, _fastmime
from bridge.mail._headers import decode_header_value, decode_words, raw_to_str, unfold
from bridge.mail._text import clean, decode_bytes, recover_bytes

__all__ = ["MAX_DEPTH", "Body", "Content", "header_end", "parse", "parse_headers", "walk"]

MAX_DEPTH = 100
_CHUNK = 1 << 16
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=\r\n]")
_NOT_BASE64_ALL = re.compile(r"[^A-Za-z0-9+/=\r\n]+")
_NOT_BASE64_TEXT = re.compile(r"[^A-Za-z0-9+/=\s]")
_B64_CHARS = re.compile(r"[^A-Za-z0-9+/]")


class _RawHeaders(Compat32):
    """compat32, except header values come back exactly as stored.

    Plain compat32 wraps any value containing 8-bit bytes in a `Header` whose str() replaces
    them, so raw UTF-8 subjects and file names would be destroyed before we see them. With
    the raw value (8-bit bytes as surrogates) `_headers.raw_to_str` can decode them properly.
    """

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value


_POLICY = _RawHeaders()
_boundary.install()  # the feed parser's boundary regexes, without a compile per message


def parse(raw: bytes, *, set_aside: bool = True) -> Message:
    """Parse a whole message without an intermediate full-size str/StringIO copy.

    The feed parser keeps a body as a list of line strings until the part ends (about 1.6x
    the body's size for base64, on top of the joined result), which made a 50 MB attachment
    cost 2.7x its size in memory. So long runs of base64-looking lines are set aside: the
    parser sees one placeholder line per run (with the run's last line ending, so its
    end-of-part handling is unchanged) and the text is put back into whichever part holds
    the placeholder, decoded straight from `raw`. The result is the same Message;
    `set_aside=False` parses without this (tests compare the two).

    Ordinary mail does not reach the feed parser at all: `_fastmime` builds the same tree
    from the bytes, or returns None and the feed parser runs as described.
    """
    fast = _fastmime.parse(raw, _POLICY)
    if fast is not None:
        return fast
    parser = FeedParser(policy=_POLICY)
    runs: dict[str, tuple[int, int]] = {}
    pos = 0
    if set_aside and len(raw) >= _SCAN_MIN_BYTES:
        nonce = ""
        for start, end in _base64_runs(raw):
            nonce = nonce or _nonce(raw)
            eol = "\r\n" if raw[end - 2 : end] == b"\r\n" else "\n"
            token = f"\x00{nonce}:{len(runs)}\x00"
            _feed(parser, raw, pos, start)
            parser.feed(token + eol)
            runs[token] = (start, end - len(eol))
            pos = end
    _feed(parser, raw, pos, len(raw))
    msg = parser.close()
    if runs:
        _put_back(msg, raw, runs)
    return msg


# A run is set aside only if it is long (about 150 KB): ordinary messages parse exactly as the
# stdlib parses them. Boundaries ("--"), headers (":") and folded lines (leading blank) can never
# be inside a run, because none of their first characters is in the base64 alphabet.
_RUN_MIN_LINES = 2000
# Looking for runs costs about 15 ns per byte; below this size it would cost more than the
# memory it could save is worth (an ordinary 5 KB message would parse 45 % slower).
_SCAN_MIN_BYTES = 256 * 1024
# Zero-width, at the start of every line that is NOT 1-76 base64 characters and a line end. Runs
# are what lies between two such lines. (A regex repeating over the run itself would keep a
# backtracking stack as large as the run.)
_OTHER_LINE = re.compile(rb"(?m)^(?![A-Za-z0-9+/=]{1,76}\r?\n)")


def _base64_runs(raw: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of every run of at least _RUN_MIN_LINES whole base64-looking lines."""
    run_start = 0
    for m in _OTHER_LINE.finditer(raw):
        at = m.start()
        if at - run_start >= _RUN_MIN_LINES * 2 and raw.count(b"\n", run_start, at) >= (
            _RUN_MIN_LINES
        ):
            yield run_start, at
        newline = raw.find(b"\n", at)
        run_start = len(raw) if newline < 0 else newline + 1


def _feed(parser: FeedParser, raw: bytes, start: int, end: int) -> None:
    for at in range(start, end, _CHUNK):
        parser.feed(raw[at : min(at + _CHUNK, end)].decode("ascii", "surrogateescape"))


def _nonce(raw: bytes) -> str:
    while True:
        nonce = secrets.token_hex(8)
        if nonce.encode() not in raw:
            return nonce


def _put_back(msg: Message, raw: bytes, runs: dict[str, tuple[int, int]]) -> None:
    view = memoryview(raw)

    def restore(text: str) -> str:
        if "\x00" not in text:
            return text
        for token, (start, end) in runs.items():
            if token in text:
                # str() of a memoryview slice: no bytes copy of the run on the way.
                run = str(view[start:end], "ascii")
                text = run if text == token else text.replace(token, run, 1)
        return text

    for part in msg.walk():
        # The stored payload (what `_walk` reads) and the text around a multipart's parts.
        for attr in ("_payload", "preamble", "epilogue"):
            value = getattr(part, attr, None)
            if isinstance(value, str):
                setattr(part, attr, restore(value))


def parse_headers(raw: bytes) -> Message:
    """Parse only the header block (the rest, if any, is ignored)."""
    end = header_end(raw)
    return parse(raw[:end])


def header_end(raw: bytes) -> int:
    """Where the header block ends: just after the first line break of its blank line."""
    crlf = raw.find(b"\r\n\r\n")
    # Only a blank LF line before the first CRLF one can end the block sooner; not searching
    # the rest keeps this from reading the whole message.
    lf = raw.find(b"\n\n", 0, len(raw) if crlf < 0 else crlf + 1)
    if lf >= 0:
        return lf + 2
    return crlf + 2 if crlf >= 0 else len(raw)


@dataclass(frozen=True)
class Content:
    """The decoded bytes of one attachment too big to inline, for whoever stores them.

    `source` is either the decoded bytes or clean base64 text (the part's payload as parsed,
    letters and line ends only): a big attachment is never decoded whole, `chunks` decodes
    it piece by piece as the consumer writes each piece away.
    """

    index: int  # position in the payload's `attachments`
    size: int
    source: bytes | str

    def chunks(self, size: int) -> Iterator[bytes]:
        if isinstance(self.source, bytes):
            view = memoryview(self.source)
            for at in range(0, len(view), size):
                yield bytes(view[at : at + size])
            return
        # base64: 4 letters make 3 bytes, so a chunk of text decodes to at most `size` bytes.
        pending = b""
        for piece in _b64_chunks(self.source, max(4, size // 3 * 4)):
            pending += piece
            while len(pending) >= size:
                yield pending[:size]
                pending = pending[size:]
        if pending:
            yield pending


@dataclass
class Body:
    """What the walk collected; `text`/`html` are lists of parts joined by the caller."""

    attachments: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    inline_limit: int = 0
    # Content of the attachments over `inline_limit`, kept only when the caller asks for it.
    contents: list[Content] | None = None
    # The message's own content type, as `get_content_type()` gives it (read once, here).
    content_type: str | None = None


def join_parts(parts: list[str]) -> str | None:
    if not parts:
        return None
    out = parts[0]
    for piece in parts[1:]:
        out += piece if out.endswith("\n") or not out else "\n" + piece
    return out


def walk(
    msg: Message, inline_limit: int, *, keep_contents: bool = False
) -> tuple[str | None, str | None, Body]:
    body = Body(inline_limit=inline_limit, contents=[] if keep_contents else None)
    texts, htmls = _walk(msg, "", 0, body)
    return join_parts(texts), join_parts(htmls), body


def _label(path: str, ctype: str) -> str:
    return f"part {path} ({ctype})" if path else f"message body ({ctype})"


def _defects(part: Message, where: str, body: Body) -> None:
    for defect in part.defects:
        doc = (type(defect).__doc__ or type(defect).__name__).strip().splitlines()[0]
        body.errors.append(f"{where}: {doc.rstrip('.')}")


def _walk(part: Message, path: str, depth: int, body: Body) -> tuple[list[str], list[str]]:
    # One content-type read per part (the parser re-parses the header on every call).
    raw_ctype = part.get_content_type()
    if not path:
        body.content_type = raw_ctype
    maintype, _, subtype = raw_ctype.partition("/")
    ctype = clean(raw_ctype)
    where = _label(path, ctype)
    _defects(part, where, body)
    # Read the stored payload directly: get_payload() already decodes 8-bit text with the
    # declared charset (and "replace"), which would hide the bytes we need for our own decode.
    payload = getattr(part, "_payload", None)
    if isinstance(payload, list) and maintype != "message":
        if depth >= MAX_DEPTH:
            body.errors.append(
                f"{where}: MIME parts nested deeper than {MAX_DEPTH} levels were ignored"
            )
            return [], []
        prefix = f"{path}." if path else ""
        results = [
            _walk(child, f"{prefix}{i}", depth + 1, body)
            for i, child in enumerate(payload, 1)
            if isinstance(child, Message)
        ]
        if subtype == "alternative":
            texts = next((t for t, _ in reversed(results) if t), [])
            htmls = next((h for _, h in reversed(results) if h), [])
            return texts, htmls
        return [t for r in results for t in r[0]], [h for r in results for h in r[1]]
    if isinstance(payload, list):
        data = _serialise_children(payload, where, body)
        # message/* must be 7bit/8bit/binary (RFC 2046 §5.2.1), but some mailers encode it
        # anyway; the parser then saw the encoded text as a header-less message.
        cte = _cte(part)
        if cte == "base64":
            data = _base64(data.decode("ascii", "surrogateescape"), where, body)
        elif cte == "quoted-printable":
            data = binascii.a2b_qp(data)
        filename = _filename(part, where, body)
        _attachment(part, data, ctype, where, body, _disposition(part), filename)
        return [], []
    if (
        isinstance(payload, str)
        and len(payload) > _STREAM_MIN_CHARS
        and ctype not in ("text/plain", "text/html")
        and maintype != "multipart"
        and _cte(part) == "base64"
    ):
        # Certainly an attachment: when too big to inline, only its size and hash are needed.
        digest = _base64_digest(payload, body.inline_limit)
        if digest is not None:
            disposition = _disposition(part)
            filename = _filename(part, where, body)
            _attachment(part, digest, ctype, where, body, disposition, filename, source=payload)
            return [], []
    data = _decode_payload(part, payload if isinstance(payload, str) else "", where, body)
    disposition = _disposition(part)
    params = _params(part)  # read once for the file name and the charset
    filename = _filename(part, where, body, params)
    if maintype == "multipart":
        # No boundary (or it never occurs): the parser left the body as one string. Keep it
        # readable as text rather than losing it.
        text, problem = decode_bytes(data, None, where)
        if problem:
            body.errors.append(problem)
        return [_newlines(text)], []
    if ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename:
        text, problem = decode_bytes(data, _charset(params), where)
        if problem:
            body.errors.append(problem)
        text = _newlines(text)
        return ([text], []) if ctype == "text/plain" else ([], [text])
    _attachment(part, data, ctype, where, body, disposition, filename)
    return [], []


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n") if "\r" in text else text


def _charset(params: tuple[Any, Any]) -> str | None:
    charset = params[0]
    if isinstance(charset, tuple):  # RFC 2231 form: (charset, language, value)
        charset = charset[2]
    return clean(str(charset)) if charset else None


def _disposition(part: Message) -> str | None:
    try:
        value = part.get_content_disposition()
    except Exception:
        return None
    return clean(value) if value else None


def _filename(
    part: Message, where: str, body: Body, params: tuple[Any, Any] | None = None
) -> str | None:
    name = (params or _params(part))[1]
    if name is _UNREADABLE:
        body.errors.append(f"{where}: the file name parameter could not be parsed")
        return None
    if not name:
        return None
    # Outlook and others put RFC 2047 words inside quoted parameters; undo that as well.
    assert isinstance(name, str)
    return clean(decode_words(unfold(raw_to_str(name, where, body.errors)), where, body.errors))


_UNREADABLE = object()
# Header values longer than this are not remembered (see `_params`).
_PARAMS_CACHE_TEXT = 1000


def _params(part: Message) -> tuple[Any, Any]:
    """(`part.get_param("charset")`, `part.get_filename()`), each None if it raised (the file
    name then `_UNREADABLE`).

    Both are the stdlib's parameter parser over the part's first Content-Type and
    Content-Disposition values, about 10 us a part; the values repeat from part to part and
    message to message ("text/plain; charset=utf-8"), so results are remembered per pair.
    """
    content_type, disposition = part.get("content-type"), part.get("content-disposition")
    if len(content_type or "") + len(disposition or "") > _PARAMS_CACHE_TEXT:
        return _read_params(content_type, disposition)
    return _read_params_cached(content_type, disposition)


def _read_params(content_type: str | None, disposition: str | None) -> tuple[Any, Any]:
    # A part with just these two fields answers exactly as the real part does: both stdlib
    # calls read only the first value of each field (and whether there is one).
    probe = Message(_POLICY)
    if content_type is not None:
        probe["Content-Type"] = content_type
    if disposition is not None:
        probe["Content-Disposition"] = disposition
    try:
        charset = probe.get_param("charset")
    except Exception:
        charset = None
    filename: object
    try:
        filename = probe.get_filename()
    except Exception:
        filename = _UNREADABLE
    return charset, filename


_read_params_cached = functools.lru_cache(maxsize=512)(_read_params)


def _decode_payload(part: Message, payload: str, where: str, body: Body) -> bytes:
    cte = _cte(part)
    if cte == "base64":
        return _base64(payload, where, body)
    if cte == "quoted-printable":
        return binascii.a2b_qp(recover_bytes(payload))
    if cte not in ("", "7bit", "8bit", "binary"):
        body.errors.append(
            f"{where}: unknown Content-Transfer-Encoding {cte[:40]!r}; content kept undecoded"
        )
    return payload.encode("ascii") if payload.isascii() else recover_bytes(payload)


def _cte(part: Message) -> str:
    return clean(str(part.get("content-transfer-encoding", ""))).strip().lower()


def _base64(payload: str, where: str, body: Body) -> bytes:
    if _NOT_BASE64.search(payload) is not None:
        junk = sum(len(m) for m in _NOT_BASE64_ALL.findall(payload))
        # Spaces and punctuation count as junk: a text body mislabelled base64 is full of
        # them, while a damaged base64 body has the odd stray character per line.
        if junk * 10 > len(payload):
            body.errors.append(
                f"{where}: declared base64 but is not base64; content kept undecoded"
            )
            return recover_bytes(payload)
        if _NOT_BASE64_TEXT.search(payload) is not None:  # stray blanks are not worth a word
            body.errors.append(f"{where}: non-base64 characters in base64 content were skipped")
        payload = _NOT_BASE64_ALL.sub("", payload)
    try:
        return binascii.a2b_base64(payload)
    except binascii.Error:
        pass
    body.errors.append(f"{where}: base64 content was truncated or badly padded")
    letters = _B64_CHARS.sub("", payload.split("=", 1)[0])
    letters = letters[: len(letters) - len(letters) % 4 if len(letters) % 4 == 1 else None]
    try:
        return binascii.a2b_base64(letters + "=" * (-len(letters) % 4))
    except binascii.Error:
        return b""


def _serialise_children(children: list[Any], where: str, body: Body) -> bytes:
    """Bytes of an embedded message (message/rfc822 etc.) as the stdlib re-emits them.

    Not byte-exact: line endings become CRLF (as on the POP3 wire) and a missing header/body
    separator is added; header values and body bytes are otherwise unchanged.
    """
    out = io.BytesIO()
    try:
        for child in children:
            if isinstance(child, Message):
                generator = BytesGenerator(out, mangle_from_=False, maxheaderlen=0, policy=_POLICY)
                generator.flatten(child, linesep="\r\n")
    except Exception as exc:
        body.errors.append(
            f"{where}: the embedded message could not be re-serialised ({type(exc).__name__})"
        )
    return out.getvalue()


def _attachment(
    part: Message,
    data: bytes | tuple[int, str],
    ctype: str,
    where: str,
    body: Body,
    disposition: str | None,
    filename: str | None,
    *,
    source: str | None = None,
) -> None:
    """`data` is the decoded content, or (size, sha256) of content too big to inline, whose
    clean base64 text is then `source`."""
    content_id = _content_id(part, where, body)
    if disposition not in ("attachment", "inline"):
        disposition = "inline" if content_id else "attachment"
    if isinstance(data, tuple):
        size, sha256, content = data[0], data[1], None
    else:
        size, sha256 = len(data), hashlib.sha256(data).hexdigest()
        content = base64.b64encode(data).decode("ascii") if size <= body.inline_limit else None
    if content is None and body.contents is not None:
        kept = source if isinstance(data, tuple) else data
        if kept is not None:
            body.contents.append(Content(len(body.attachments), size, kept))
    body.attachments.append(
        {
            "filename": filename,
            "content_type": ctype,
            "disposition": disposition,
            "content_id": content_id,
            "size": size,
            "sha256": sha256,
            "content": content,
        }
    )


# Base64 bodies longer than this are hashed in chunks when they will not be inlined, instead
# of being decoded whole next to their text (0.75x the message more at the peak).
_STREAM_MIN_CHARS = 1 << 20
_STREAM_CHUNK = 1 << 20
_CLEAN_BASE64 = re.compile(r"[A-Za-z0-9+/\r\n]*=*[\r\n]*")
_LINE_ENDS = str.maketrans("", "", "\r\n")


def _base64_digest(payload: str, inline_limit: int) -> tuple[int, str] | None:
    """(size, sha256) of clean base64 bigger than `inline_limit`, decoded chunk by chunk.

    None (decode it whole) unless the text is only base64 letters and line ends with padding
    at the very end, a whole number of quads, and larger than the limit: exactly the inputs
    where decoding by quad-aligned chunks equals `a2b_base64` of the whole.
    """
    if _CLEAN_BASE64.fullmatch(payload) is None:
        return None
    sha = hashlib.sha256()
    size = 0
    try:
        for chunk in _b64_chunks(payload, _STREAM_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    except (binascii.Error, ValueError):
        return None
    if size <= inline_limit:
        return None
    return size, sha.hexdigest()


def _b64_chunks(payload: str, step: int) -> Iterator[bytes]:
    """Decode clean base64 `payload` by quad-aligned pieces of about `step` letters.

    Raises ValueError when letters are left over that do not make a whole quad.
    """
    carry = ""
    for at in range(0, len(payload), step):
        text = carry + payload[at : at + step].translate(_LINE_ENDS)
        whole = len(text) - len(text) % 4
        yield binascii.a2b_base64(text[:whole])
        carry = text[whole:]
    if carry:
        raise ValueError("base64 text is not a whole number of quads")


def _content_id(part: Message, where: str, errors_body: Body) -> str | None:
    value = part.get("content-id")
    if value is None:
        return None
    text = decode_header_value(str(value), where, errors_body.errors)
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text or None

"""Bytes -> str for mail, under one rule: decoding never fails, it only reports.

Mail lies about its charsets all the time. Every decode in this package goes through
`decode_bytes`, which returns text plus, when something had to be guessed or replaced, a
sentence for `parse_errors`. Everything it returns is safe to put into JSON (no lone
surrogates), because orjson refuses those and the payload must always encode.
"""

from __future__ import annotations

import codecs
import re

__all__ = ["clean", "decode_bytes", "normalise_charset", "recover_bytes"]

# Labels that real mail uses for a narrower charset than it actually contains. Decoding with
# the superset first turns most "broken" messages into correct text without any guesswork;
# the superset agrees with the labelled charset on every byte the label defines.
_SUPERSETS: dict[str, str] = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "cp936": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "windows-31j": "cp932",
    "big5": "big5hkscs",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "tis-620": "cp874",
    "iso-2022-jp": "iso2022_jp_ext",
}

# Labels that mean "nothing declared" in practice; 8-bit bytes under them are usually UTF-8.
_ASCII_LABELS = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968", "us", "7bit", "8bit"})

_UTF8 = frozenset({"utf-8", "utf8"})

_LABEL_JUNK = re.compile(r"[\s\"']+")


def normalise_charset(label: str | None) -> str | None:
    """Lower-case a charset label and strip the quoting/whitespace that mailers add."""
    if label is None:
        return None
    cleaned = _LABEL_JUNK.sub("", clean(label)).lower()
    return cleaned or None


def clean(text: str) -> str:
    """Make `text` encodable as UTF-8, replacing lone surrogates with U+FFFD.

    Surrogates appear when the stdlib parser smuggles 8-bit header bytes through
    `surrogateescape`, and from codecs such as utf-7 or unicode_escape; both are turned into
    replacement characters rather than being allowed to break JSON encoding later.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape" if _only_escapes(text) else "surrogatepass")
        return raw.decode("utf-8", "replace")
    return text


def _only_escapes(text: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def recover_bytes(text: str) -> bytes:
    """Undo the parser's surrogateescape so the original header bytes can be decoded properly."""
    return text.encode("utf-8", "surrogateescape")


def _codec_for(label: str) -> codecs.CodecInfo | None:
    try:
        info = codecs.lookup(_SUPERSETS.get(label, label))
    except (LookupError, ValueError, TypeError):
        return None
    # Codecs like base64 or zlib are bytes-to-bytes; a charset label must name a text codec.
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info


def decode_bytes(data: bytes, label: str | None, where: str) -> tuple[str, str | None]:
    """Decode `data` declared as `label`; return the text and a problem sentence or None.

    Order of attempts: the declared charset (widened to its common superset); for a missing or
    ASCII label, UTF-8; and as a last resort the declared charset (or UTF-8) with replacement.
    `where` names the place ("Subject header", "part 1.2") so the sentence is actionable.
    """
    charset = normalise_charset(label)
    # Fast path for the common case; charsets that are not ASCII-compatible (utf-16, utf-7,
    # ISO-2022 with its ESC sequences) are not in this set and go through their codec.
    if data.isascii() and (charset is None or charset in _ASCII_LABELS or charset in _UTF8):
        return data.decode("ascii"), None
    if charset is None or charset in _ASCII_LABELS:
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            text = data.decode("utf-8", "replace")
            what = "no charset" if charset is None else f"charset {charset!r}"
            return clean(text), (
                f"{where}: 8-bit bytes with {what} are not valid UTF-8; "
                "undecodable bytes were replaced with U+FFFD"
            )
    info = _codec_for(charset)
    if info is None:
        try:
            return data.decode("utf-8"), f"{where}: unknown charset {charset!r}; decoded as UTF-8"
        except UnicodeDecodeError:
            return clean(data.decode("utf-8", "replace")), (
                f"{where}: unknown charset {charset!r}; decoded as UTF-8 and undecodable bytes "
                "were replaced with U+FFFD"
            )
    try:
        return clean(info.decode(data, "strict")[0]), None
    except (UnicodeError, ValueError, TypeError):
        pass
    # The label lied. UTF-8 is by far the most common truth, and it almost never validates
    # by accident, so a clean UTF-8 decode is trusted over the label.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return text, f"{where}: text labelled {charset!r} was actually UTF-8"
    try:
        text = info.decode(data, "replace")[0]
    except (UnicodeError, ValueError, TypeError, LookupError):
        text = data.decode("utf-8", "replace")
    return clean(text), (f"{where}: bytes invalid in charset {charset!r} were replaced with U+FFFD")

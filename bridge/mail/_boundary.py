"""Multipart boundaries for the standard library's feed parser without a regex per message.

`email.feedparser` compiles a new regular expression for every multipart part it meets: the
pattern embeds the part's boundary, and boundaries are unique per message, so `re`'s cache
never hits. Compiling runs the pure-Python regex parser and cost about 100 us a multipart
message, a third of parsing a typical 5 KB one.

The compiled pattern is only ever used through `.match(line)` and the match's `end` and
`linesep` groups. `BoundaryMatcher` gives the same answer with a `startswith` and one regex
compiled once. `install()` points the feed parser's module-level `re` at a stand-in whose
`compile` returns a `BoundaryMatcher` for exactly that pattern shape, and the real `re.compile`
for anything else (or any boundary it cannot decode back): behaviour stays the parser's own,
which the tests check by parsing the corpus and generated multiparts both ways.
"""

from __future__ import annotations

import re
import types
from email import feedparser
from typing import Any

__all__ = ["BoundaryMatcher", "install"]

_HEAD = "(?P<sep>"
_TAIL = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_AFTER_SEPARATOR = re.compile(_TAIL[1:])
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)


class BoundaryMatcher:
    """Matches the lines `re.compile('(?P<sep>' + re.escape(separator) + _TAIL)` matches."""

    __slots__ = ("separator",)

    def __init__(self, separator: str) -> None:
        self.separator = separator

    def match(self, line: str) -> re.Match[str] | None:
        if not line.startswith(self.separator):
            return None
        return _AFTER_SEPARATOR.match(line, len(self.separator))


def _separator(pattern: str) -> str | None:
    """The literal separator inside a feed-parser boundary pattern, or None if it is not one."""
    if not (pattern.startswith(_HEAD) and pattern.endswith(_TAIL)):
        return None
    escaped = pattern[len(_HEAD) : -len(_TAIL)]
    separator = _UNESCAPE.sub(r"\1", escaped)
    # Only a separator that escapes back to exactly this text is taken; anything else (a
    # future change of the parser's pattern) goes to the real compiler.
    return separator if re.escape(separator) == escaped else None


def _compile(pattern: Any, flags: int = 0) -> Any:
    if flags == 0 and isinstance(pattern, str):
        separator = _separator(pattern)
        if separator is not None:
            return BoundaryMatcher(separator)
    return re.compile(pattern, flags)


def install() -> None:
    """Give the feed parser the stand-in `re` (idempotent)."""
    if getattr(getattr(feedparser, "re", None), "__name__", "") == __name__:
        return
    shim = types.ModuleType(__name__)
    shim.__dict__.update({k: getattr(re, k) for k in dir(re) if not k.startswith("__")})
    shim.compile = _compile  # type: ignore[attr-defined]
    setattr(feedparser, "re", shim)  # noqa: B010 - mypy does not know the module's `re`

"""PyYAML, imported without compiling its pure-Python reader's character class up front.

Importing `yaml` imports its pure-Python `Reader`, whose class body compiles `NON_PRINTABLE`:
a negated class of every printable Unicode range, which `re` turns into tables over the whole
Basic Multilingual Plane. That one `re.compile` is 57 M instructions, more than the rest of
PyYAML's import together and ~4 % of what `pop3bridge once` runs before its first POST
(callgrind, 3 Dec 2026). Only that reader searches with it, and the configuration is read by
LibYAML's (`CSafeLoader`, `bridge.config.sources`), so here it is compiled at its first use
instead: by the pure-Python loader (a PyYAML without LibYAML) or by anything else that reads
`Reader.NON_PRINTABLE`, with the same pattern, flags and results.

How: while `yaml` is first imported, `re.compile` hands back a `LazyPattern` for that exact
pattern string and is `re.compile` for every other call (another thread compiling meanwhile
gets its own pattern as usual). If `yaml` was imported before, or a PyYAML release spells the
pattern differently, nothing is deferred and nothing else changes.
"""

from __future__ import annotations

import re
import sys
import threading
from typing import TYPE_CHECKING, Any

__all__ = ["NON_PRINTABLE", "LazyPattern", "yaml"]

# yaml/reader.py's Reader.NON_PRINTABLE, character for character (PyYAML 5.1 to 6.0.x).
NON_PRINTABLE = "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"


class LazyPattern:
    """`re.compile(source, flags)` on first attribute access; then every attribute is the
    compiled pattern's (`search`, `match`, `pattern`, ...)."""

    def __init__(self, source: str, flags: int) -> None:
        self._source = source
        self._flags = flags
        self._compiled: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def compiled(self) -> re.Pattern[str]:
        """The real pattern (compiled once; `re`'s own cache keeps it too)."""
        if self._compiled is None:
            with self._lock:
                if self._compiled is None:
                    self._compiled = _compile(self._source, self._flags)
        return self._compiled

    def __getattr__(self, name: str) -> Any:
        return getattr(self.compiled(), name)

    def __repr__(self) -> str:
        return repr(self.compiled())


_compile = re.compile


def _import_yaml() -> Any:
    if "yaml" in sys.modules:
        return sys.modules["yaml"]

    def compile_(pattern: Any, flags: int = 0) -> Any:
        if pattern == NON_PRINTABLE and isinstance(pattern, str):
            return LazyPattern(pattern, flags)
        return _compile(pattern, flags)

    re.compile = compile_
    try:
        import yaml as module
    finally:
        re.compile = _compile
    return module


if TYPE_CHECKING:
    import yaml
else:
    yaml = _import_yaml()

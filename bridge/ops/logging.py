"""One logging setup for the whole process: JSON lines or text, with secrets scrubbed.

Every module logs through ``logging.getLogger(__name__)``; `configure_logging` installs the
only handler (on the root logger) and that handler both filters and formats, so nothing reaches
stderr without passing `redact`. Scrubbing happens twice on purpose: on the record's parts
before formatting (so JSON escaping cannot hide a secret from the patterns) and on the
formatted line (so a formatter bug or an odd `extra` value cannot let one through).

Two kinds of secret are removed:
- values registered at runtime with `register_secret` (passwords, webhook secrets, tokens as
  they leave their `SecretStr` wrappers), wherever they appear;
- things that look like credentials whatever their value: POP3 ``PASS`` arguments, ``AUTH``
  initial responses, ``APOP`` digests, ``Authorization``/``Bearer`` values, ``whsec_`` keys,
  passwords in URLs and ``password=...``-style pairs.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable
from typing import IO, Any

import orjson

__all__ = [
    "REDACTED",
    "JSONFormatter",
    "RedactingFilter",
    "TextFormatter",
    "clear_secrets",
    "configure_logging",
    "console",
    "redact",
    "redact_value",
    "register_secret",
]

REDACTED = "***"

# Shorter values would scrub ordinary words out of every line ("abc" in "abcdef"); such weak
# secrets are still caught by the credential patterns when they appear next to their keyword.
_MIN_SECRET_LEN = 4

_lock = threading.Lock()
_secrets: set[str] = set()
_secret_re: re.Pattern[str] | None = None
_secrets_changed = False  # `_secret_re` is rebuilt at the next `redact`

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # POP3 PASS takes the rest of the line (RFC 1939 allows spaces in it). The client's own
    # "PASS refused by <host>: <reason>" is prose: the reason ([IN-USE], [SYS/TEMP], ...) is
    # what an operator needs, and configured passwords are scrubbed as registered secrets.
    (re.compile(r"(?i)(\bPASS[ \t]+)(?!refused by )[^\r\n'\"]+"), r"\1" + REDACTED),
    # AUTH mechanism [initial-response]: keep the mechanism name, drop the payload. The
    # mechanism must be a registered name (any case) or written in capitals as RFC 4422 spells
    # them, so prose such as "AUTH refused by host" keeps its words.
    (
        re.compile(
            r"((?i:\bAUTH)[ \t]+(?:(?i:PLAIN|LOGIN|CRAM-MD5|DIGEST-MD5|XOAUTH2|OAUTHBEARER|"
            r"GSSAPI|NTLM|EXTERNAL|ANONYMOUS|SCRAM-SHA-1(?:-PLUS)?|SCRAM-SHA-256(?:-PLUS)?)\b|"
            r"[A-Z0-9_-]{1,20}(?![a-z]))[ \t]+)[^\s'\"]+"
        ),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)(\bAPOP[ \t]+\S+[ \t]+)[0-9a-f]{32}\b"), r"\1" + REDACTED),
    (
        re.compile(r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)[^\r\n'\",}]+"),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)(\bBearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + REDACTED),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]*"), "whsec_" + REDACTED),
    # scheme://user:password@host
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
    (
        re.compile(
            r"(?i)(\b(?:password|passwd|pwd|secret|client_secret|refresh_token|access_token|"
            r"api_key|token)[\"']?\s*[:=]\s*[\"']?)(?!\*\*\*)[^\s'\",&}]+"
        ),
        r"\1" + REDACTED,
    ),
)


def register_secret(value: str | None) -> None:
    """Scrub `value` from every later log record, wherever it appears.

    Registering only adds to the set; the pattern is rebuilt at the next `redact`. Compiling
    it here, once per secret, made a start with 1,000 accounts (a password each) spend most of
    its first cycle re-compiling an ever longer pattern (quadratic in the number of secrets).
    """
    global _secrets_changed
    if not value or len(value) < _MIN_SECRET_LEN:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        _secrets_changed = True


def clear_secrets() -> None:
    """Forget registered secrets (tests; a process never needs this)."""
    global _secret_re, _secrets_changed
    with _lock:
        _secrets.clear()
        _secret_re = None
        _secrets_changed = False


def _secret_pattern() -> re.Pattern[str] | None:
    global _secret_re, _secrets_changed
    if _secrets_changed:
        with _lock:
            if _secrets_changed:
                _secret_re = re.compile(_alternatives(_secrets)) if _secrets else None
                _secrets_changed = False
    return _secret_re


def _alternatives(words: Iterable[str]) -> str:
    """A pattern matching any of `words`, the longest one where several start at a place.

    Written as a prefix tree (``ab(?:c|d)``) rather than one alternative per word: `re` tries
    a plain alternation's branches one by one at every position, so with 10,000 account
    passwords each scrubbed line cost about 7 ms; the tree costs about 0.1 ms. Within a node
    the longer continuations come first and the word ending there last, which is the same
    choice as sorting the words longest first.
    """
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def branch(node: dict[str, Any]) -> str:
        alts = []
        for ch in sorted(k for k in node if k):
            run, child = ch, node[ch]
            while len(child) == 1 and "" not in child:  # a chain without a fork: one literal
                ((nxt, child),) = child.items()
                run += nxt
            alts.append(re.escape(run) + (branch(child) if child.keys() != {""} else ""))
        if "" in node and alts:
            alts.append("")
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    try:
        return branch(root)
    except RecursionError:  # pragma: no cover - thousands of words, each a prefix of the next
        return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def redact(text: str) -> str:
    """`text` with registered secrets and credential-looking parts replaced by ``***``."""
    pattern = _secret_pattern()
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


def redact_value(value: Any) -> Any:
    """`value` (str, bytes, or containers of them) with every string passed through `redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {str(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}


class RedactingFilter(logging.Filter):
    """Rewrites a record in place: message merged and scrubbed, traceback text scrubbed."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format must not lose the record (or leak its args)
            message = f"{record.msg!s} (log arguments could not be formatted)"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in _extras(record).items():
            setattr(record, key, redact_value(value))
        return True


def _timestamp(record: logging.LogRecord) -> str:
    moment = _dt.datetime.fromtimestamp(record.created, tz=_dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _exception_text(record: logging.LogRecord) -> str | None:
    if record.exc_text:
        return record.exc_text
    if record.exc_info:
        return "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    return None


class JSONFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in _extras(record).items():
            if key not in doc:
                doc[key] = redact_value(value)
        exc = _exception_text(record)
        if exc:
            doc["exception"] = redact(exc)
        if record.stack_info:
            doc["stack"] = redact(record.stack_info)
        line = orjson.dumps(doc, default=str).decode("utf-8")
        return redact(line)


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message> key=value ...`` plus the traceback, for people."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, f"{record.name}:", record.getMessage()]
        parts += [f"{k}={redact_value(v)!r}" for k, v in _extras(record).items()]
        text = " ".join(parts)
        exc = _exception_text(record)
        if exc:
            text += "\n" + exc
        if record.stack_info:
            text += "\n" + record.stack_info
        return redact(text)


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at each record, not the one at configuration time,
    so a caller that swaps stderr later (a test capturing output, a daemon redirecting it)
    never leaves the handler writing to a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass  # always the current sys.stderr


_handler: logging.Handler | None = None
_format: str | None = None  # of the installed handler; None until configure_logging runs


def configure_logging(
    format: str = "json",
    level: str | int = "INFO",
    *,
    stream: IO[str] | None = None,
    quiet: Iterable[str] = ("aiohttp.access",),
) -> logging.Handler:
    """Install the process's one log handler on the root logger; returns it.

    Calling it again replaces the handler it installed before (not handlers others added), so
    tests and the CLI can reconfigure freely. `quiet` loggers are raised to WARNING: aiohttp's
    per-request access log would otherwise log every Prometheus scrape.
    """
    global _handler, _format
    if format not in ("json", "text"):
        raise ValueError(f"logging format must be 'json' or 'text', not {format!r}")
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown logging level {level!r}; use DEBUG, INFO, WARNING or ERROR")
    handler: logging.StreamHandler = (  # type: ignore[type-arg]
        logging.StreamHandler(stream) if stream is not None else _CurrentStderrHandler()
    )
    handler.setFormatter(JSONFormatter() if format == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in quiet:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    _handler = handler
    _format = format
    return handler


def console(
    message: str,
    *,
    logger: str,
    level: int = logging.INFO,
    stream: IO[str] | None = None,
    **fields: Any,
) -> None:
    """Write one line a command owes its caller (stdout unless `stream` says otherwise).

    With text logs (or before logging is configured) the line is `message` exactly, which is
    what people and shell scripts read. With JSON logs it is a JSON object shaped like every
    log record (timestamp, level, logger, message) plus `fields`, so everything a container
    writes parses as JSON line by line and scripts still find what they need in the fields
    (e.g. a listener's bound `port`). Redacted like any record.
    """
    out = sys.stdout if stream is None else stream
    if _format == "json":
        record = logging.LogRecord(logger, level, "", 0, message, None, None)
        record.__dict__.update(fields)
        RedactingFilter().filter(record)
        line = JSONFormatter().format(record)
    else:
        line = redact(message)
    print(line, file=out, flush=True)

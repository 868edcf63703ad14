"""`reply_text`: the new text of a reply, without the quoted history and the signature.

Why our own and not a library: the maintained PyPI parsers were tried on the quoting styles
the tests carry (docs/formats.md, "reply_text"). `mail-parser-reply` 1.36 keeps the quote
under Gmail's Spanish attribution ("... (<a@b>) escribió:") and under K-9's German one
("... schrieb am ...:"), and keeps "-- " signatures; `email-reply-parser` knows English only
and has had no release since 2020; `talon` has had none since 2017 and needs scikit-learn.
The rules below are short because every mailer marks the start of the history in one of four
ways, whatever the language:

1. a separator line: underscores (Outlook web), "-----Original Message-----" and its
   translations, "---------- Forwarded message ---------";
2. a header block: "From:" (or Von:/De:/差出人: ...) followed closely by at least one more
   header-like line (Sent:/Date:/To:/Subject: and their translations): Outlook desktop and
   any top-posted reply that pastes the original's headers;
3. an attribution: a line (or a line wrapped onto the next, as Gmail does) ending in ":" that
   names a date, an address or a "wrote" verb, followed by a quoted (">") line: Gmail, Apple
   Mail, Thunderbird, K-9 in every language they ship;
4. quoted (">") lines themselves: with inline answers (an edited quote), every unquoted line
   is new text and is kept, the quoted ones and their attribution are dropped.

Then the signature goes: from a "-- " line (RFC 3676 §4.3), and a trailing "Sent from my
phone" line. Null when there is no text part, or nothing is left.
"""

from __future__ import annotations

import re

__all__ = ["reply_text"]

_SEPARATOR = re.compile(
    r"^\s*(?:_{8,}|-{2,}\s*(?:original message|ursprüngliche nachricht|message d'origine|"
    r"mensaje original|messaggio originale|forwarded message|weitergeleitete nachricht|"
    r"message transféré|mensaje reenviado|元のメッセージ|転送されたメッセージ)\s*-{2,})\s*$",
    re.IGNORECASE,
)
_FROM_FIELD = re.compile(
    r"^\s*\*?(?:from|von|de|da|van|från|fra|差出人|送信者|发件人)\s*\*?\s*[:：]\s*\S", re.IGNORECASE
)
_OTHER_FIELD = re.compile(
    r"^\s*\*?(?:sent|date|to|cc|subject|gesendet|datum|an|betreff|envoyé|date|à|objet|"
    r"enviado|fecha|para|asunto|inviato|data|oggetto|a|送信日時|日付|宛先|件名|"
    r"发送时间|收件人|主题)\s*\*?\s*[:：]",
    re.IGNORECASE,
)
_WROTE = re.compile(
    r"wrote|writes|schrieb|schreef|a écrit|escribió|escreveu|scritto|scrisse|napisał|написал|"
    r"skrev|kirjoitti|のメール|書きました|写道",
    re.IGNORECASE,
)
_HINT = re.compile(r"\d|@")
_SIGNATURE = re.compile(r"^--\s?$")
_MOBILE = re.compile(
    r"^\s*(?:sent from my |von meinem .* gesendet|envoyé de mon |enviado desde mi |"
    r"get outlook for |inviato da |.*から送信$)",
    re.IGNORECASE,
)
_HEADER_LOOKAHEAD = 6


def reply_text(text: str | None) -> str | None:
    """The reply's own text (module docstring); None when it cannot tell."""
    if not text:
        return None
    if "\r" in text:  # one-character searches are the cheap ones (memchr)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not _may_have_history(text):
        # No quote, separator, header block or attribution can be here, and most mail is
        # not a reply: the text-level path costs a few microseconds, the per-line rules ~70.
        return _tidy(_cut_signature(text)) or None
    lines = text.split("\n")
    kept = _drop_signature(_drop_quotes(lines[: _history_start(lines)]))
    return _tidy("\n".join(kept)) or None


# Substrings without which no rule above can match (a quoted line, a line ending in ":", a
# separator); a "From:"-like field at a line start. Plain `in` tests: one regex over the
# whole text cost as much as the rest of the reply parsing; and each multi-character test is
# asked only once a one-character test (a memchr) found its rarest character.
_MARKS_COLON = (":\n", "：\n", ": \n")
_FIELD_STARTS = tuple(
    f"\n{star}{name}"
    for name in ("from", "von", "de", "da", "van", "från", "fra", "差出人", "送信者", "发件人")
    for star in ("", "*")
)


def _may_have_history(text: str) -> bool:
    if text.startswith((">", " >")):
        return True
    if (">" in text and ("\n>" in text or "\n >" in text)) or ("-" in text and "-----" in text):
        return True
    if "_" in text and "________" in text:
        return True
    # Every remaining rule needs a colon (lower-casing makes none), and most mail has none in
    # its text: the lower-cased copy and the field-start searches cost ~50 us on 4 KB of text.
    if ":" not in text and "：" not in text:
        return False
    if any(mark in text for mark in _MARKS_COLON):
        return True
    if text.rstrip(" \t\n").endswith((":", "：")):
        return True
    low = "\n" + text.lower()
    for start in _FIELD_STARTS:
        at = low.find(start)
        while at >= 0:  # "\nde" also starts "delivery": look at what follows each one
            after = at + len(start)
            if low[after : after + 8].lstrip(" \t*").startswith((":", "：")):
                return True
            at = low.find(start, after)
    return False


def _quoted(line: str) -> bool:
    return line.lstrip(" ").startswith(">")


def _history_start(lines: list[str]) -> int:
    """Index of the first line of a separator, header block or attribution; len if none."""
    for i, line in enumerate(lines):
        if _quoted(line):
            continue
        if _SEPARATOR.match(line):
            return i
        if _FROM_FIELD.match(line) and _header_block(lines, i):
            return i
        # Inline answers follow the first quote: only a quote that runs to the end of the text
        # (blank and further attribution lines aside) is history.
        if _attribution_at(lines, i) and _only_quotes_after(lines, i):
            return i
    return len(lines)


def _header_block(lines: list[str], i: int) -> bool:
    following = lines[i + 1 : i + 1 + _HEADER_LOOKAHEAD]
    return sum(1 for line in following if _OTHER_FIELD.match(line)) >= 1


def _attribution_span(lines: list[str], i: int) -> int:
    """How many lines (1 or 2) form an attribution starting at i; 0 if none."""
    for span in (1, 2):
        if i + span > len(lines):
            return 0
        # Most lines end in something else: decided before any joining (this runs per line).
        if not lines[i + span - 1].rstrip().endswith((":", "：")):
            continue
        joined = " ".join(line.strip() for line in lines[i : i + span])
        if not (_WROTE.search(joined) or _HINT.search(joined)):
            return 0
        after = i + span
        while after < len(lines) and not lines[after].strip():
            after += 1
        return span if after < len(lines) and _quoted(lines[after]) else 0
    return 0


def _attribution_at(lines: list[str], i: int) -> bool:
    return bool(lines[i].strip()) and _attribution_span(lines, i) > 0


def _only_quotes_after(lines: list[str], i: int) -> bool:
    j = i + _attribution_span(lines, i)
    while j < len(lines):
        line = lines[j]
        if line.strip() and not _quoted(line):
            if _attribution_at(lines, j):
                j += _attribution_span(lines, j)
                continue
            return _signature_or_mobile(lines, j)
        j += 1
    return True


def _signature_or_mobile(lines: list[str], j: int) -> bool:
    """A signature after the quote (bottom-quoting mailers add one) does not make it inline."""
    rest = [line for line in lines[j:] if line.strip()]
    return _SIGNATURE.match(lines[j]) is not None or (
        len(rest) == 1 and _MOBILE.match(rest[0]) is not None
    )


def _drop_quotes(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _quoted(line):
            i += 1
            continue
        span = _attribution_span(lines, i) if line.strip() else 0
        if span:
            i += span
            continue
        out.append(line)
        i += 1
    return out


def _drop_signature(lines: list[str]) -> list[str]:
    for i, line in enumerate(lines):
        if _SIGNATURE.match(line):
            lines = lines[:i]
            break
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    if lines and _MOBILE.match(lines[-1]):
        lines = lines[:-1]
    return lines


def _tidy(text: str) -> str:
    """Trailing blanks off every line, runs of empty lines made one, no empty first/last.

    String methods, not regexes: on a few kilobytes of text each regex pass cost 20-40 us.
    """
    if " \n" in text or "\t\n" in text or text.endswith((" ", "\t")):
        text = "\n".join(line.rstrip(" \t") for line in text.split("\n"))
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip("\n")


def _cut_signature(text: str) -> str:
    """`_drop_signature` over the whole text, for texts without history (same result)."""
    cut = len(text)
    at = text.find("\n--")  # the first "\n-- \n" or "\n--\n", in one pass
    while at >= 0:
        if text.startswith(("\n", " \n"), at + 3):
            cut = at
            break
        at = text.find("\n--", at + 3)
    if text.startswith(("-- \n", "--\n")) or text in ("--", "-- "):
        cut = 0
    elif text.endswith(("\n--", "\n-- ")):
        cut = min(cut, text.rindex("\n"))
    text = text[:cut].rstrip()
    head, _, last = text.rpartition("\n")
    return head if _MOBILE.match(last) else text

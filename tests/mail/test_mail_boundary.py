"""The feed parser with `_boundary`'s matcher must parse exactly as with its own regexes.

`bridge.mail._boundary.install()` swaps the per-message `re.compile` of multipart boundaries for
a `startswith` and one shared regex (a third of the parse time of a typical multipart message).
Every message here is parsed both ways and the trees compared part by part: structure, bodies,
preambles, epilogues and the defects the parser noted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from email import feedparser
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.mail import _boundary
from bridge.mail._mime import parse
from bridge.testing.samples import generate_messages

CORPUS = sorted((Path(__file__).resolve().parent.parent / "corpus" / "eml").glob("*.eml"))


@contextmanager
def _stock_parser() -> Iterator[None]:
    shim = feedparser.re
    feedparser.re = re  # type: ignore[attr-defined]
    try:
        yield
    finally:
        feedparser.re = shim  # type: ignore[attr-defined]


def _tree(msg: Message) -> Any:
    body = msg.get_payload()
    return (
        msg.get_content_type(),
        msg.preamble,
        msg.epilogue,
        [type(d).__name__ for d in msg.defects],
        [_tree(p) for p in body] if isinstance(body, list) else body,
    )


def _outcome(raw: bytes) -> Any:
    try:
        return _tree(parse(raw))
    except RecursionError:  # MIME nested past the interpreter's limit: must fail both ways
        return "RecursionError"


def _same_both_ways(raw: bytes) -> Any:
    shimmed = _outcome(raw)
    with _stock_parser():
        stock = _outcome(raw)
    assert shimmed == stock
    return shimmed


def test_the_shim_is_installed_and_used() -> None:
    assert feedparser.re.compile is _boundary._compile  # type: ignore[attr-defined]
    matcher = feedparser.re.compile(  # type: ignore[attr-defined]
        "(?P<sep>" + re.escape("--a.b*c") + _boundary._TAIL
    )
    assert isinstance(matcher, _boundary.BoundaryMatcher)
    assert matcher.separator == "--a.b*c"
    # Other patterns, and flags, still go to the real compiler.
    assert isinstance(feedparser.re.compile("x+"), re.Pattern)  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_parses_the_same(path: Path) -> None:
    _same_both_ways(path.read_bytes())


def test_generated_multiparts_parse_the_same() -> None:
    trees = [_same_both_ways(raw) for raw in generate_messages(200, seed=11)]
    assert any(isinstance(t[4], list) for t in trees)  # multiparts were among them


_BOUNDARY_CHARS = st.sampled_from([*"ab09-_=.'()+,/:?*#$^[]{}|\\" * 3, " ", "\t", "é", "\x00"])
_TAILS = st.sampled_from(["", "", "", "--", " ", "\t", "--  ", "x", "--x", "-", " --"])
_EOLS = st.sampled_from(["\r\n", "\n", "\r", ""])


@st.composite
def _multiparts(draw: st.DrawFn) -> bytes:
    boundary = "".join(draw(st.lists(_BOUNDARY_CHARS, min_size=1, max_size=12)))
    quoted = '"' + boundary.replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines = [f"Content-Type: multipart/mixed; boundary={quoted}\r\n", "\r\n"]
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["boundary", "boundary", "text", "header", "blank"]))
        if kind == "boundary":
            prefix = draw(st.sampled_from(["--"] * 6 + ["-", "", "---"]))
            lines.append(prefix + boundary + draw(_TAILS) + draw(_EOLS))
        elif kind == "text":
            lines.append(draw(st.sampled_from(["hello", "--", boundary, "x: y"])) + "\r\n")
        elif kind == "header":
            lines.append("Content-Type: text/plain\r\n\r\n")
        else:
            lines.append(draw(_EOLS) or "\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


@settings(max_examples=400, deadline=None)
@given(_multiparts())
def test_generated_boundaries_parse_the_same(raw: bytes) -> None:
    _same_both_ways(raw)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_BOUNDARY_CHARS, min_size=0, max_size=20))
def test_separator_decodes_back_from_its_escaped_pattern(boundary: str) -> None:
    separator = "--" + boundary
    pattern = "(?P<sep>" + re.escape(separator) + _boundary._TAIL
    assert _boundary._separator(pattern) == separator

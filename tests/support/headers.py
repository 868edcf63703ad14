"""A hypothesis strategy for raw header blocks, for the tests that compare header scans.

Each scan test picks its own field names, value pieces, line ends and block endings (what it
must reach); the shape of a block (fields, continuation lines, junk lines, then an ending) is
the same for all of them and lives here once.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st


@st.composite
def header_blocks(
    draw: st.DrawFn,
    names: st.SearchStrategy[str],
    values: st.SearchStrategy[str],
    *,
    max_lines: int,
    eols: Sequence[str],
    ends: Sequence[str],
) -> bytes:
    """Up to `max_lines` lines (mostly `name:value`, some folded continuations, a few lines of
    junk), each ended by one of `eols`, then one of `ends`; lone surrogates become raw bytes."""
    lines: list[str] = []
    for _ in range(draw(st.integers(0, max_lines))):
        kind = draw(st.sampled_from(["field"] * 12 + ["continuation"] * 4 + ["junk"]))
        eol = draw(st.sampled_from(list(eols)))
        if kind == "field":
            lines.append(draw(names) + ":" + draw(values) + eol)
        elif kind == "continuation":
            lines.append(draw(st.sampled_from([" ", "\t", "  "])) + draw(values) + eol)
        else:
            lines.append(draw(values) + eol)
    end = draw(st.sampled_from(list(ends)))
    return ("".join(lines) + end).encode("utf-8", "surrogateescape")

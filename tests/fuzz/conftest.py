"""Counts of fuzz inputs tried, printed in pytest's terminal summary (no -s needed).

Each fuzz test increments `fuzz_counts[name]` once per input and asserts a minimum itself, so a
run that silently tried nothing fails instead of passing.
"""

from __future__ import annotations

from collections import Counter

import pytest

_COUNTS: Counter[str] = Counter()


@pytest.fixture
def fuzz_counts() -> Counter[str]:
    return _COUNTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _COUNTS:
        return
    terminalreporter.section("fuzz inputs tried")
    for name, n in sorted(_COUNTS.items()):
        terminalreporter.write_line(f"{n:8d}  {name}")
    terminalreporter.write_line(f"{sum(_COUNTS.values()):8d}  total")

"""Soak reports go into pytest's terminal summary, so CI logs show the counts without -s."""

from __future__ import annotations

import pytest

_REPORTS: list[str] = []


@pytest.fixture
def soak_reports() -> list[str]:
    return _REPORTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _REPORTS:
        terminalreporter.section("soak")
        for text in _REPORTS:
            terminalreporter.write_line(text)

"""The documented commands no test runs, listed in pytest's terminal summary (no -s needed):
the escape hatch of tests/docs/doc_commands.py stays in plain sight on every run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.doc_commands import extract

ROOT = Path(__file__).resolve().parents[2]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = [c for c in extract(ROOT) if c.skip_reason is not None]
    if not skipped:
        return
    terminalreporter.section(f"documented commands not run ({len(skipped)})")
    for c in skipped:
        terminalreporter.write_line(f"{c.where}  {c.command.split('#')[0].strip()[:60]}")
        terminalreporter.write_line(f"    {c.skip_reason}")

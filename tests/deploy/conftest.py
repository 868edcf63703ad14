"""Session fixtures for the tests that need a Docker engine or helm, and the summary lines they
leave at the end of the run (image size, venv size, what could not be validated)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from engine import REPORT, BuiltImage, Docker, build, engine


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    d = engine()
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture(scope="session")
def image(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    built = build(docker, tmp_path_factory.mktemp("image"))
    REPORT.append(
        f"image {built.tag}: {built.size / 1e6:.1f} MB ({built.size} bytes), built in "
        f"{built.build_seconds:.0f} s on base {built.base} ({built.base_kind})"
    )
    return built


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.write_sep("-", "container image and chart")
        for line in REPORT:
            terminalreporter.write_line(line)

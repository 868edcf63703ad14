"""The program ends through `bridge.cli.exit_now`: the interpreter's teardown is skipped, but
nothing a normal exit promises is lost (output, exit status, `atexit` hooks, live threads,
profiler reports)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.cli import main

ROOT = Path(__file__).resolve().parents[1]


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_program_output_is_complete_through_a_pipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "reference"]) == 0
    in_process = capsys.readouterr().out
    assert len(in_process) > 10_000  # more than one pipe buffer's worth is still buffered
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "config", "reference"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == in_process


def test_exit_status_and_stderr_of_a_failing_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("webhooks: 3\n")
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "once", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "invalid configuration" in out.stderr


def test_atexit_hooks_and_log_handlers_run() -> None:
    out = python(
        """
        import atexit, logging, sys
        from bridge.cli import exit_now
        atexit.register(lambda: print("hook ran"))
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().warning("last words")
        sys.stdout.write("unflushed")
        exit_now(3)
        """
    )
    assert out.returncode == 3
    assert out.stdout == "unflushedhook ran\n"
    assert "last words" in out.stderr


def test_ordinary_exit_waits_for_a_live_thread() -> None:
    out = python(
        """
        import threading, time
        from bridge.cli import exit_now
        def work():
            time.sleep(0.3)  # still working when exit_now() is called
            print("thread finished", flush=True)
        threading.Thread(target=work).start()
        try:
            exit_now(4)
        except SystemExit as exc:
            print("ordinary exit", exc.code, flush=True)
            raise
        """
    )
    assert out.returncode == 4
    assert out.stdout == "ordinary exit 4\nthread finished\n"


def test_ordinary_exit_under_a_profiler(tmp_path: Path) -> None:
    report = tmp_path / "profile.out"
    command = ["-m", "bridge", "config", "reference"]
    out = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(report), *command],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert report.stat().st_size > 0  # written after the program returned

"""README's promise for a machine without the servers: without `CI=true` every test that needs
a missing Dovecot or PostgreSQL skips (none fails); with `CI=true` they fail (the fixtures'
own tests check that side: test_dovecot_fixture.py, tests/store/test_open_store.py)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


SELECT = ("-m", "dovecot or postgres", "tests")


def test_without_ci_every_test_needing_a_missing_server_skips() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["POP3BRIDGE_TEST_DOVECOT"] = "/nonexistent/dovecot"
    env["POP3BRIDGE_TEST_PG_DSN"] = f"postgresql://postgres@127.0.0.1:{_closed_port()}/test"
    # Every test that needs either server: marked, or using the fixture (tests/conftest.py
    # marks those), in the whole suite.
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *SELECT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert not re.search(r"\d+ (failed|error)", summary), summary
    skipped = re.search(r"(\d+) skipped", summary)
    assert skipped and int(skipped.group(1)) >= 100, summary

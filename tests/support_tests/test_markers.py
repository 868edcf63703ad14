"""Markers mean what they say: `-m postgres` selects every test that needs PostgreSQL (and
`-m "not postgres"` none of them), `-m slow` is the soak, and `make test` runs everything."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def collect(*args: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode in (0, 5), proc.stdout[-3000:] + proc.stderr[-2000:]
    return {line for line in proc.stdout.splitlines() if "::" in line}


def test_postgres_marks_every_backend_parameter_and_only_those() -> None:
    paths = ["tests/store", "tests/poller/test_leases.py", "tests/e2e/test_accounts_db.py"]
    everything = collect(*paths)
    marked = collect("-m", "postgres", *paths)
    on_postgres = {t for t in everything if "[postgres" in t}
    assert len(on_postgres) >= 40
    assert marked == on_postgres
    assert not collect("-m", "not postgres", *paths) & on_postgres


def test_slow_is_the_soak_and_make_test_runs_it_too() -> None:
    slow = collect("-m", "slow", "tests")
    assert slow and all(t.startswith("tests/soak/") for t in slow)
    assert slow == collect("tests/soak")
    # Nothing deselects by marker by default: `make test` (plain pytest) runs every test.
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    assert "-m" not in str(options["ini_options"].get("addopts", "")).split()
    recipe = re.search(r"^test:.*?(?=^\S)", (ROOT / "Makefile").read_text() + "\nx", re.M | re.S)
    assert recipe
    [run] = [line for line in recipe.group(0).splitlines() if "-m pytest" in line]
    assert not re.search(r"\s-m\s", run.split("-m pytest", 1)[1]), run

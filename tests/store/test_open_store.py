"""URL parsing and error reporting of `open_store` (no secret in any message)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.store import StoreError, StoreUnavailable, open_store
from bridge.store.factory import redact_url, sqlite_path
from bridge.store.postgres import PostgresStore
from bridge.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/pop3bridge/state.db", "/var/lib/pop3bridge/state.db"),
        ("sqlite:////abs/x.db", "/abs/x.db"),  # one leading slash in logs (issue 12)
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite:rel/state.db", "rel/state.db"),
        ("sqlite:///abs/x.db?synchronous=full", "/abs/x.db"),
    ],
)
def test_sqlite_paths(url: str, path: str) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize("url", ["sqlite:", "sqlite://host/x.db"])
def test_bad_sqlite_urls(url: str) -> None:
    with pytest.raises(StoreError, match="sqlite"):
        open_store(url)


def test_sqlite_options() -> None:
    assert isinstance(open_store("sqlite:///tmp/x.db?synchronous=full"), SQLiteStore)
    with pytest.raises(StoreError, match="synchronous"):
        open_store("sqlite:///tmp/x.db?synchronous=off")
    with pytest.raises(StoreError, match="unknown sqlite option"):
        open_store("sqlite:///tmp/x.db?journal=delete")


def test_unknown_scheme_message_has_no_password() -> None:
    with pytest.raises(StoreError) as info:
        open_store("mysql://user:hunter2@db/x")
    assert "hunter2" not in str(info.value)
    assert "unsupported scheme" in str(info.value)
    assert redact_url("postgresql://u:pw@h:5433/d") == "postgresql://u:***@h:5433/d"


def test_bad_schema_name_refused() -> None:
    with pytest.raises(StoreError, match="schema name"):
        open_store('postgresql://u@h/d?schema=x";drop table y;--')
    store = open_store("postgresql://u@h/d?schema=ok_1&sslmode=disable")
    assert isinstance(store, PostgresStore) and store.schema == "ok_1"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_postgres_is_unavailable_without_password() -> None:
    port = _closed_port()
    store = open_store(f"postgresql://bridge:s3cr3t-pw@127.0.0.1:{port}/mail")
    try:
        with pytest.raises(StoreUnavailable) as info:
            await store.migrate()
    finally:
        await store.close()
    text = str(info.value)
    assert "s3cr3t-pw" not in text and f"127.0.0.1:{port}/mail" in text
    assert info.value.__cause__ is None or "s3cr3t-pw" not in str(info.value.__cause__)


async def test_unwritable_sqlite_location_is_unavailable(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path}/missing-dir/state.db")
    with pytest.raises(StoreUnavailable, match="missing-dir"):
        await store.migrate()
    await store.close()


async def test_not_a_database_is_reported(tmp_path: Path) -> None:
    bogus = tmp_path / "state.db"
    bogus.write_bytes(b"this is not sqlite" * 500)
    store = open_store(f"sqlite://{bogus}")
    with pytest.raises(StoreError, match="corrupt or not a database"):
        await store.migrate()
    await store.close()


def test_postgres_suite_fails_in_ci_when_postgres_is_missing(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        CI="true",
        POP3BRIDGE_TEST_PG_DSN=f"postgresql://postgres@127.0.0.1:{_closed_port()}/test",
    )
    test_id = "tests/store/test_store_contract.py::test_accounts_crud"

    def pytest_run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_id],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    run = pytest_run()
    assert run.returncode == 1, run.stdout
    assert "1 passed" in run.stdout and ("1 failed" in run.stdout or "1 error" in run.stdout)
    env.pop("CI")
    run = pytest_run()
    assert run.returncode == 0, run.stdout
    assert "1 passed" in run.stdout and "1 skipped" in run.stdout

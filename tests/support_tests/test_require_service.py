"""The fail-vs-skip rule for services a test needs from the machine."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.support import require_service
from tests.support.dovecot import dovecot_available


def test_ok_service_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    require_service("thing", True, "unused")


def test_missing_service_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="thing is required but not usable: gone"):
        require_service("thing", False, "gone")


@pytest.mark.parametrize("value", ["1", "false", "TRUE"])
def test_only_ci_true_turns_skip_into_failure(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception):
        require_service("thing", False, "gone")


def test_missing_service_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_service("thing", False, "gone")


def test_dovecot_available_reports_a_missing_binary() -> None:
    ok, why = dovecot_available("/nonexistent/dovecot")
    assert not ok and "not installed" in why


def test_postgres_dsn_points_at_loopback(postgres_dsn: str) -> None:
    async def probe() -> int:
        conn = await asyncpg.connect(postgres_dsn, timeout=5)
        try:
            return int(await conn.fetchval("SELECT 41 + 1"))
        finally:
            await conn.close()

    assert "127.0.0.1" in postgres_dsn
    assert asyncio.run(probe()) == 42

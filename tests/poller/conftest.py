"""Poller fixtures: a migrated SQLite store in a temp dir and an account spec for a Dovecot user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.poller.spec import AccountSpec
from bridge.store import Store, open_store
from tests.support.dovecot import DovecotServer, DovecotUser


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


def dovecot_spec(dovecot: DovecotServer, user: DovecotUser, **overrides: object) -> AccountSpec:
    values: dict[str, object] = {
        **dovecot.pop3s_account(user),
        "connect_timeout": 10.0,
        "read_timeout": 10.0,
        **overrides,
    }
    return AccountSpec(**values)  # type: ignore[arg-type]

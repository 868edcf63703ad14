"""Store fixtures: `store_url` / `store` parametrised over SQLite (tmp file) and PostgreSQL
(a fresh schema per test on the shared `test` database, dropped afterwards)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bridge.store import Store, open_store
from tests.support.pgschema import BACKENDS, drop_schema, schema_url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite://{tmp_path / 'state.db'}"
    return schema_url(request.getfixturevalue("postgres_dsn"), "t_store")


@pytest.fixture
async def store_factory(store_url: str) -> AsyncIterator[Callable[[], Store]]:
    """Opens more stores on the same database (other 'replicas'); all closed, schema dropped."""
    opened: list[Store] = []

    def make() -> Store:
        s = open_store(store_url)
        opened.append(s)
        return s

    yield make
    for s in opened:
        await s.close()
    await drop_schema(store_url)


@pytest.fixture
async def store(store_factory: Callable[[], Store]) -> Store:
    s = store_factory()
    await s.migrate()
    return s

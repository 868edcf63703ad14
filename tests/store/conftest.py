"""Store fixtures: `store_url` / `store` parametrised over SQLite (tmp file) and PostgreSQL
(a fresh schema per test on the shared `test` database, dropped afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bridge.store import Store, open_store
from bridge.store.postgres import PostgresStore


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite://{tmp_path / 'state.db'}"
    dsn = request.getfixturevalue("postgres_dsn")
    schema = f"t_store_{uuid.uuid4().hex[:12]}"
    return f"{dsn}?schema={schema}"


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
    if store_url.startswith("postgresql"):
        cleaner = open_store(store_url)
        assert isinstance(cleaner, PostgresStore)
        try:
            await cleaner.drop_schema()
        finally:
            await cleaner.close()


@pytest.fixture
async def store(store_factory: Callable[[], Store]) -> Store:
    s = store_factory()
    await s.migrate()
    return s

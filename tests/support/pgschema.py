"""A private PostgreSQL schema per test: a state URL naming a fresh schema, and its removal.

Tests that run against the shared `test` database each get their own schema (the store's
`?schema=` option), so parallel and repeated runs never see each other's rows; the schema is
dropped afterwards through the store itself, which knows every table it created.
"""

from __future__ import annotations

import uuid

import pytest

from bridge.store import open_store
from bridge.store.postgres import PostgresStore

__all__ = ["BACKENDS", "drop_schema", "schema_url"]

# Parameters of a fixture that runs a test on each store backend; the PostgreSQL one carries
# the `postgres` marker (tests/conftest.py's `postgres_dsn` insists on it).
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def schema_url(dsn: str, prefix: str) -> str:
    """`dsn` with a new, unique `?schema=<prefix>_<hex>` (created by the first `migrate`)."""
    return f"{dsn}?schema={prefix}_{uuid.uuid4().hex[:12]}"


async def drop_schema(url: str) -> None:
    """Drop the schema a PostgreSQL state URL names; SQLite URLs are left alone."""
    if not url.startswith("postgres"):
        return
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    try:
        await store.drop_schema()
    finally:
        await store.close()

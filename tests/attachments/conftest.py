"""Link tests run on both backends: the store fixtures of tests/store (SQLite file, PostgreSQL
schema), plus a message with a small and a big attachment."""

from __future__ import annotations

from tests.store.conftest import backend, store, store_factory, store_url

__all__ = ["backend", "store", "store_factory", "store_url"]

"""Accounts kept in the database, in SQL (`AccountStore`): name -> the account's JSON config."""

from __future__ import annotations

from typing import Any

import orjson

from bridge.store.base import AccountStore
from bridge.store.sql import Execute, Fetch, SQLPart, Tx, read, write

__all__ = ["AccountSQL"]


class AccountSQL(SQLPart, AccountStore):
    @write
    def add_account(self, name: str, config: dict[str, Any], now: float) -> Tx[None]:
        yield Execute(
            "INSERT INTO accounts (name, config, created_at, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET config = excluded.config, "
            "updated_at = excluded.updated_at",
            (name, orjson.dumps(config).decode(), now, now),
        )

    @read
    def list_accounts(self) -> Tx[list[tuple[str, dict[str, Any]]]]:
        rows = yield Fetch("SELECT name, config FROM accounts ORDER BY name")
        return [(r[0], orjson.loads(r[1])) for r in rows]

    @write
    def remove_account(self, name: str) -> Tx[bool]:
        removed: int = yield Execute("DELETE FROM accounts WHERE name = ?", (name,))
        return removed > 0

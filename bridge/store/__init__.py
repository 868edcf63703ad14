"""Durable state: seen UIDLs, outbox with retry schedule, dead letters, leases, accounts.

`open_store(url)` picks the backend; everything else is the `Store` interface in `base.py`.
"""

from __future__ import annotations

from bridge.store.base import (
    AccountStats,
    DeadLetter,
    NewMessage,
    OutboxItem,
    SeenState,
    Store,
)
from bridge.store.errors import StoreError, StoreFull, StoreUnavailable
from bridge.store.factory import open_store

__all__ = [
    "AccountStats",
    "DeadLetter",
    "NewMessage",
    "OutboxItem",
    "SeenState",
    "Store",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "open_store",
]

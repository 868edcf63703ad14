"""Typed store errors.

Callers decide what to do by type: `StoreFull` means an operator must free disk space (retrying
will not help), `StoreUnavailable` means the database could not be reached or is locked (retrying
later may help), anything else under `StoreError` is a bug or a corrupt database. Messages name
the database by path or host only: a URL's password never reaches an exception.
"""

from __future__ import annotations

__all__ = ["StoreError", "StoreFull", "StoreUnavailable"]


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class StoreFull(StoreError):
    """The disk (or the database's quota) is full; nothing of the failed operation was written."""


class StoreUnavailable(StoreError):
    """The database cannot be reached, refused us, or stayed locked longer than the timeout."""

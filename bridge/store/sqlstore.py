"""`SQLStore`: the whole `Store` in SQL, the four parts combined with versioned migrations.

A backend is an adapter subclass (`sqlite.SQLiteStore`, `postgres.PostgresStore`) that
supplies a `Dialect` and `_transact`; it writes no statement of its own.
"""

from __future__ import annotations

import logging

from bridge.store.accounts import AccountSQL
from bridge.store.base import Store
from bridge.store.custody import CustodySQL
from bridge.store.errors import StoreError
from bridge.store.leases import LeaseSQL
from bridge.store.links import LinkSQL
from bridge.store.outbox import OutboxSQL
from bridge.store.schema import MIGRATIONS
from bridge.store.seen import SeenSQL
from bridge.store.sql import Execute, Fetch, Script, Tx, atomic, read

__all__ = ["SQLStore"]

log = logging.getLogger(__name__)


class SQLStore(SeenSQL, OutboxSQL, CustodySQL, LeaseSQL, AccountSQL, LinkSQL, Store):
    async def migrate(self) -> None:
        """Versioned and idempotent; concurrent callers apply each step once (the dialect's
        preamble serialises them on PostgreSQL, BEGIN IMMEDIATE does on SQLite).

        Every process start runs this, and almost always the schema is already current: a
        plain read says so first, without the write lock (or PostgreSQL's advisory lock) that
        replicas starting together would otherwise queue on one after another.
        """
        try:
            if await self._schema_version() == len(MIGRATIONS):
                return
        except StoreError:
            pass  # no schema_version table yet (a new database), or a real problem: both
            # go through the locked migration, which reports the latter
        await self._migrate()

    @read
    def _schema_version(self) -> Tx[int]:
        rows = yield Fetch("SELECT max(version) FROM schema_version")
        return int(rows[0][0] or 0)

    @atomic
    def _migrate(self) -> Tx[None]:
        d = self.dialect
        yield from d.migration_preamble()
        yield Script("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        rows = yield Fetch("SELECT max(version) FROM schema_version")
        current = int(rows[0][0] or 0)
        if current > len(MIGRATIONS):
            raise StoreError(
                f"{self.where} has pop3bridge schema version {current}, newer than this "
                f"pop3bridge understands ({len(MIGRATIONS)}); upgrade pop3bridge"
            )
        for version in range(current, len(MIGRATIONS)):
            yield Script(d.ddl(MIGRATIONS[version]))
            yield Execute("INSERT INTO schema_version (version) VALUES (?)", (version + 1,))
            log.info("%s migrated to schema version %d", self.where, version + 1)

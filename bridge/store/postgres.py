"""PostgreSQL adapter of the SQL store (asyncpg): several replicas share one database.

The statements are `bridge.store.sqlstore.SQLStore`'s; this module holds the pool, runs each
store method's statements on one pooled connection, and names asyncpg's errors.

Outbox claims
-------------
This dialect's `skip_locked` is `FOR UPDATE SKIP LOCKED`: replicas claiming at once pass over
each other's rows (`bridge/store/outbox.py` says why that never claims a row twice).

Leases are rows with an expiry, not advisory locks: `bridge/store/leases.py` says why.

Migrations
----------
`migrate` runs in one transaction holding `pg_advisory_xact_lock` keyed by the schema name, so
replicas starting together apply each versioned step exactly once and the others wait and then
see the new version. `?schema=NAME` in the URL keeps every table in that schema (created on
migrate); tests use it to get a fresh schema each.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import re
from collections.abc import Collection, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from bridge.store import sql
from bridge.store.errors import StoreError, StoreFull, StoreUnavailable
from bridge.store.sqlstore import SQLStore

__all__ = ["PostgresDialect", "PostgresStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# Column kinds of `sql.Dialect.in_list` / `array_table` / `insert_many` as PostgreSQL array types.
_ARRAY = {"text": "text", "bigint": "bigint", "real": "float8", "bool": "boolean", "blob": "bytea"}


class PostgresDialect(sql.Dialect):
    name = "postgresql"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, schema: str | None) -> None:
        self.schema = schema

    def in_list(self, expr: str, kind: str) -> str:
        return f"{expr} = ANY(?::{_ARRAY[kind]}[])"

    def array_table(self, kind: str) -> str:
        return f"unnest(?::{_ARRAY[kind]}[]) WITH ORDINALITY AS t(v, n)"

    def pairs_table(self, pairs: Sequence[tuple[str, str]]) -> tuple[str, tuple[Any, ...]]:
        return "unnest(?::text[], ?::text[]) AS t(a, u)", (
            [a for a, _ in pairs],
            [u for _, u in pairs],
        )

    def array(self, values: Collection[Any]) -> Any:
        return list(values)

    def insert_many(self, table: str, columns: sql.Columns, rows: sql.Rows, tail: str) -> sql.Op:
        return sql.Execute(*_unnest(table, columns, rows, tail))

    def insert_ids(self, table: str, columns: sql.Columns, rows: sql.Rows, tail: str) -> sql.Op:
        text, args = _unnest(table, columns, rows, tail)
        return sql.Fetch(f"{text} RETURNING id, {columns[0][0]}", args)

    def migration_preamble(self) -> sql.Tx[None]:
        # Replicas starting together queue here; each versioned step is applied exactly once.
        yield sql.Execute("SELECT pg_advisory_xact_lock(?)", (_lock_key(self.schema),))
        if self.schema:
            yield sql.Script(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')


def _unnest(
    table: str, columns: sql.Columns, rows: sql.Rows, tail: str
) -> tuple[str, list[list[Any]]]:
    """`INSERT` of `rows` as one statement over column arrays (far fewer round trips and
    plans than executemany), and its arguments."""
    names = ", ".join(name for name, _ in columns)
    arrays = ", ".join(f"?::{_ARRAY[kind]}[]" for _, kind in columns)
    text = f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) {tail}"
    return text, [list(column) for column in zip(*rows, strict=True)]


_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidCatalogNameError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)


def _where(dsn: str) -> str:
    """host:port/db of a DSN, for messages (never the user's password)."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "PostgreSQL"
    db = parts.path.lstrip("/") or "(default database)"
    return f"PostgreSQL at {host}:{port}/{db}"


def _translate(exc: BaseException, where: str) -> StoreError:
    if isinstance(exc, asyncpg.exceptions.DiskFullError):
        return StoreFull(
            f"{where}: the database server's disk is full; free space there, nothing of the "
            "failed operation was written"
        )
    if isinstance(exc, _UNAVAILABLE):
        return StoreUnavailable(f"{where} is unavailable ({type(exc).__name__}: {exc})")
    return StoreError(f"{where}: {type(exc).__name__}: {exc}")


def _lock_key(schema: str | None) -> int:
    digest = hashlib.sha256(f"pop3bridge:migrate:{schema or ''}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresStore(SQLStore):
    """`Store` on PostgreSQL through an asyncpg pool."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_pool: int = 1,
        max_pool: int = 10,
        connect_timeout: float = 10.0,
    ) -> None:
        if schema is not None and not _SCHEMA_RE.match(schema):
            raise StoreError(
                f"schema name {schema!r} is not allowed; use lowercase letters, digits and _ "
                "(at most 63, not starting with a digit)"
            )
        self._dsn = dsn
        self.schema = schema
        self.where = _where(dsn)
        self.dialect = PostgresDialect(schema)
        self._min_pool = min_pool
        self._max_pool = max_pool
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._closed = False

    # -- plumbing -----------------------------------------------------------------------------
    async def _get_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise StoreError(f"store on {self.where} is closed")
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                settings = {"search_path": self.schema} if self.schema else {}
                try:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=self._min_pool,
                        max_size=self._max_pool,
                        timeout=self._connect_timeout,
                        server_settings=settings,
                    )
                except (ValueError, TypeError) as exc:
                    # The driver's parse errors may quote the DSN, password included.
                    raise StoreError(
                        f"state.url for {self.where} is not a valid PostgreSQL URL "
                        f"({type(exc).__name__}); see the libpq connection URI syntax"
                    ) from None
                except Exception as exc:
                    raise _translate(exc, self.where) from None
            return self._pool

    async def _perform(self, conn: asyncpg.Connection, op: sql.Op) -> Any:
        if isinstance(op, sql.Fetch):
            return await conn.fetch(sql.numbered(op.sql), *op.args)
        if isinstance(op, sql.Execute):
            status = await conn.execute(sql.numbered(op.sql), *op.args)
            tail = status.rsplit(" ", 1)[-1]
            return int(tail) if tail.isdigit() else 0
        if isinstance(op, sql.Many):
            await conn.executemany(sql.numbered(op.sql), op.rows)
            return None
        if isinstance(op, sql.Script):
            await conn.execute(op.sql)
            return None
        result = op.fn(conn)
        return await result if inspect.isawaitable(result) else result

    async def _drive(self, conn: asyncpg.Connection, body: sql.Tx[T], op: sql.Op) -> T:
        step: sql.Op | sql.Done[T] = op
        while not isinstance(step, sql.Done):
            step = sql.advance(body, await self._perform(conn, step))
        return step.value

    async def _transact(self, body: sql.Tx[T], mode: sql.Mode) -> T:
        op = sql.advance(body, first=True)
        if isinstance(op, sql.Done):
            return op.value  # nothing to run (an empty batch): no round trip
        pool = await self._get_pool()
        try:
            async with pool.acquire() as conn:
                if mode in ("atomic", "bounded"):
                    async with conn.transaction():
                        return await self._drive(conn, body, op)
                # "read" and "write": each statement commits on its own (see `sql.write`).
                return await self._drive(conn, body, op)
        except StoreError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise _translate(exc, self.where) from exc

    # -- lifecycle -----------------------------------------------------------------------------
    async def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def drop_schema(self) -> None:
        """Drop this store's schema and everything in it (tests; refuses without a schema)."""
        if not self.schema:
            raise StoreError("drop_schema needs a ?schema= store; refusing to drop public tables")

        def drop() -> sql.Tx[None]:
            yield sql.Script(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

        await self._transact(drop(), "write")

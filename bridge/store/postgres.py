"""PostgreSQL store (asyncpg): several replicas share one database.

Outbox claims
-------------
`claim_due` picks due rows with `FOR UPDATE SKIP LOCKED` and stamps them with `claimed_by` and
`claim_until` in the same statement. SKIP LOCKED keeps two replicas from waiting on (or taking)
the row another one is claiming right now; under READ COMMITTED, PostgreSQL re-checks the WHERE
clause on the newest row version after locking, so a row claimed by a transaction that committed
after our snapshot is dropped rather than claimed twice. The claim is a timestamp, not a held
lock, so the claiming transaction commits at once and a replica that dies mid-delivery gives its
claims back when `claim_until` passes.

Leases: rows with an expiry, not advisory locks
-----------------------------------------------
Each account lease is a row (account, holder, expires_at), renewed by heartbeat. We chose this
over session-scoped advisory locks because:
* a session lock lives as long as the TCP session; a replica that hangs, or a network partition,
  keeps the lock until TCP keepalive gives up (often hours with default kernel settings), while a
  row expires after its TTL (default 30 s) whatever happens to the connection;
* session locks need one pinned connection per replica and break behind pgbouncer in transaction
  mode; rows work through any pooler;
* rows are visible (`lease_holders`, `SELECT * FROM leases`) for status pages and checks.
The price is that replicas' clocks must agree to well within the TTL (run NTP), because expiry
is compared with the caller's `now`. Taking over is one conditional upsert
(`... ON CONFLICT DO UPDATE ... WHERE leases.expires_at <= now`), which PostgreSQL evaluates on
the locked, newest row, so two replicas can never both win the same expired lease.

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
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import orjson

from bridge.store.base import AccountStats, DeadLetter, NewMessage, OutboxItem, Store
from bridge.store.errors import StoreError, StoreFull, StoreUnavailable

__all__ = ["PostgresStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE seen (
        account     text NOT NULL,
        uidl        text NOT NULL,
        fingerprint text NOT NULL DEFAULT '',
        seen_at     double precision NOT NULL,
        PRIMARY KEY (account, uidl)
    );
    CREATE INDEX seen_fingerprint ON seen (account, fingerprint);
    CREATE TABLE outbox (
        id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        msg_id           text NOT NULL UNIQUE,
        account          text NOT NULL,
        uidl             text NOT NULL,
        webhook          text NOT NULL,
        size             bigint NOT NULL,
        state            text NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts         integer NOT NULL DEFAULT 0,
        created_at       double precision NOT NULL,
        next_attempt_at  double precision NOT NULL,
        claimed_by       text,
        claim_until      double precision,
        last_error       text,
        last_status      integer,
        finished_at      double precision,
        delete_requested boolean NOT NULL DEFAULT false,
        deleted_at       double precision
    );
    CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending';
    CREATE INDEX outbox_account ON outbox (account, uidl);
    CREATE INDEX outbox_dead ON outbox (finished_at, id) WHERE state = 'dead';
    CREATE TABLE bodies (
        msg_id  text PRIMARY KEY REFERENCES outbox (msg_id) ON DELETE CASCADE,
        payload bytea NOT NULL,
        raw     bytea
    );
    CREATE TABLE leases (
        account    text PRIMARY KEY,
        holder     text NOT NULL,
        expires_at double precision NOT NULL
    );
    CREATE INDEX leases_holder ON leases (holder);
    CREATE TABLE replicas (
        holder     text PRIMARY KEY,
        expires_at double precision NOT NULL
    );
    CREATE TABLE accounts (
        name       text PRIMARY KEY,
        config     jsonb NOT NULL,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL
    );
    """,
)

_OUTBOX_RETURNING = (
    "o.id, o.msg_id, o.account, o.uidl, o.webhook, b.payload, o.attempts, o.created_at, "
    "o.next_attempt_at, o.last_error, o.size, "
    "CASE WHEN substring(b.payload FROM 1 FOR 1) = '\\x00'::bytea THEN b.raw END"
)
_DEAD_COLS = (
    "id, msg_id, account, uidl, webhook, attempts, created_at, finished_at, last_error, last_status"
)

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


class PostgresStore(Store):
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

    async def _call(
        self, fn: Callable[[asyncpg.Connection], Awaitable[T]], *, tx: bool = False
    ) -> T:
        pool = await self._get_pool()
        try:
            async with pool.acquire() as conn:
                if tx:
                    async with conn.transaction():
                        return await fn(conn)
                return await fn(conn)
        except StoreError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise _translate(exc, self.where) from exc

    # -- lifecycle -----------------------------------------------------------------------------
    async def migrate(self) -> None:
        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(self.schema))
            if self.schema:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"
            )
            current = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"{self.where} has pop3bridge schema version {current}, newer than this "
                    f"pop3bridge understands ({len(MIGRATIONS)}); upgrade pop3bridge"
                )
            for version in range(current, len(MIGRATIONS)):
                await conn.execute(MIGRATIONS[version])
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version + 1)
                log.info("PostgreSQL store migrated to schema version %d", version + 1)

        await self._call(run, tx=True)

    async def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def drop_schema(self) -> None:
        """Drop this store's schema and everything in it (tests; refuses without a schema)."""
        if not self.schema:
            raise StoreError("drop_schema needs a ?schema= store; refusing to drop public tables")

        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

        await self._call(run)

    # -- UIDLs ---------------------------------------------------------------------------------
    async def seen_uidls(self, account: str) -> set[str]:
        async def run(conn: asyncpg.Connection) -> set[str]:
            rows = await conn.fetch("SELECT uidl FROM seen WHERE account = $1", account)
            return {r[0] for r in rows}

        return await self._call(run)

    async def record(self, messages: Sequence[NewMessage], now: float) -> None:
        unique: dict[tuple[str, str], NewMessage] = {}
        for m in messages:
            unique.setdefault((m.account, m.uidl), m)
        if not unique:
            return
        batch = list(unique.values())

        async def run(conn: asyncpg.Connection) -> None:
            rows = await conn.fetch(
                "INSERT INTO seen (account, uidl, fingerprint, seen_at) "
                "SELECT a, u, f, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS t(a, u, f) "
                "ON CONFLICT (account, uidl) DO NOTHING RETURNING account, uidl",
                [m.account for m in batch],
                [m.uidl for m in batch],
                [m.fingerprint for m in batch],
                now,
            )
            inserted = {(r[0], r[1]) for r in rows}
            fresh = [m for m in batch if (m.account, m.uidl) in inserted]
            if not fresh:
                return
            await conn.execute(
                "INSERT INTO outbox (msg_id, account, uidl, webhook, size, state, created_at, "
                "next_attempt_at, delete_requested) "
                "SELECT m, a, u, w, s, 'pending', $7, $7, d FROM unnest($1::text[], $2::text[], "
                "$3::text[], $4::text[], $5::bigint[], $6::boolean[]) AS t(m, a, u, w, s, d) "
                "ON CONFLICT (msg_id) DO NOTHING",
                [m.msg_id for m in fresh],
                [m.account for m in fresh],
                [m.uidl for m in fresh],
                [m.webhook for m in fresh],
                [m.size for m in fresh],
                [m.delete_after_delivery for m in fresh],
                now,
            )
            await conn.execute(
                "INSERT INTO bodies (msg_id, payload, raw) "
                "SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[]) "
                "ON CONFLICT (msg_id) DO NOTHING",
                [m.msg_id for m in fresh],
                [m.payload for m in fresh],
                [m.raw for m in fresh],
            )

        await self._call(run, tx=True)

    async def mark_seen(self, account: str, items: Sequence[tuple[str, str]], now: float) -> None:
        dedup = dict(items)  # one row per uidl: DO UPDATE may not touch a row twice
        if not dedup:
            return

        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO seen (account, uidl, fingerprint, seen_at) "
                "SELECT $1, u, f, $4 FROM unnest($2::text[], $3::text[]) AS t(u, f) "
                "ON CONFLICT (account, uidl) DO UPDATE SET fingerprint = excluded.fingerprint",
                account,
                list(dedup.keys()),
                list(dedup.values()),
                now,
            )

        await self._call(run)

    async def known_fingerprints(self, account: str, fingerprints: Collection[str]) -> set[str]:
        wanted = list(set(fingerprints))
        if not wanted:
            return set()

        async def run(conn: asyncpg.Connection) -> set[str]:
            rows = await conn.fetch(
                "SELECT DISTINCT fingerprint FROM seen "
                "WHERE account = $1 AND fingerprint = ANY($2::text[])",
                account,
                wanted,
            )
            return {r[0] for r in rows}

        return await self._call(run)

    async def forget_missing(self, account: str, present: Collection[str]) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            gone = await conn.fetch(
                "SELECT s.uidl FROM seen s WHERE s.account = $1 "
                "AND NOT EXISTS (SELECT 1 FROM unnest($2::text[]) AS p(u) WHERE p.u = s.uidl) "
                "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.account = $1 AND o.uidl = s.uidl "
                "AND (o.state IN ('pending', 'dead') "
                "OR (o.delete_requested AND o.deleted_at IS NULL))) "
                "FOR UPDATE OF s",
                account,
                list(set(present)),
            )
            drop = [r[0] for r in gone]
            if not drop:
                return 0
            await conn.execute(
                "DELETE FROM outbox WHERE account = $1 AND uidl = ANY($2::text[]) "
                "AND state = 'delivered'",
                account,
                drop,
            )
            await conn.execute(
                "DELETE FROM seen WHERE account = $1 AND uidl = ANY($2::text[])", account, drop
            )
            return len(drop)

        return await self._call(run, tx=True)

    # -- outbox ------------------------------------------------------------------------------------
    async def claim_due(
        self, now: float, limit: int, holder: str, lease_seconds: float
    ) -> list[OutboxItem]:
        if limit <= 0:
            return []

        async def run(conn: asyncpg.Connection) -> list[OutboxItem]:
            rows = await conn.fetch(
                # S608: SQL made of constants and placeholders; values are bound.
                "WITH c AS (SELECT id FROM outbox WHERE state = 'pending' "  # noqa: S608
                "AND next_attempt_at <= $1 AND (claim_until IS NULL OR claim_until <= $1) "
                "ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) "
                "UPDATE outbox o SET claimed_by = $3, claim_until = $4 "
                "FROM c, bodies b WHERE o.id = c.id AND b.msg_id = o.msg_id "
                f"RETURNING {_OUTBOX_RETURNING}",
                now,
                limit,
                holder,
                now + lease_seconds,
            )
            items = [OutboxItem(*r) for r in rows]
            items.sort(key=lambda i: (i.next_attempt_at, i.id))
            return items

        return await self._call(run)

    async def mark_delivered_many(self, marks: Sequence[tuple[int, int]], now: float) -> None:
        if not marks:
            return

        async def run(conn: asyncpg.Connection) -> None:
            await conn.executemany(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, "
                "last_status = $1, finished_at = $2, claimed_by = NULL, claim_until = NULL "
                "WHERE id = $3 AND state <> 'delivered'",
                [(status, now, item_id) for item_id, status in marks],
            )

        await self._call(run, tx=True)

    async def mark_retry(
        self, item_id: int, next_attempt_at: float, error: str, status: int | None, now: float
    ) -> None:
        async def run(conn: asyncpg.Connection) -> None:
            # Only a pending row: a late worker whose claim expired must not undo a delivery.
            await conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, "
                "last_error = $2, last_status = $3, claimed_by = NULL, claim_until = NULL "
                "WHERE id = $4 AND state = 'pending'",
                next_attempt_at,
                error,
                status,
                item_id,
            )

        await self._call(run)

    async def mark_dead(self, item_id: int, error: str, status: int | None, now: float) -> None:
        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = $1, "
                "last_status = $2, finished_at = $3, claimed_by = NULL, claim_until = NULL "
                "WHERE id = $4 AND state = 'pending'",
                error,
                status,
                now,
                item_id,
            )

        await self._call(run)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        async def run(conn: asyncpg.Connection) -> list[DeadLetter]:
            rows = await conn.fetch(
                # S608: SQL made of constants and placeholders; values are bound.
                f"SELECT {_DEAD_COLS} FROM outbox WHERE state = 'dead' "  # noqa: S608
                "ORDER BY finished_at, id LIMIT $1",
                limit,
            )
            return [DeadLetter(*r) for r in rows]

        return await self._call(run)

    async def replay(self, ids: Sequence[int] | None, now: float) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            sql = (
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $1, "
                "finished_at = NULL, claimed_by = NULL, claim_until = NULL WHERE state = 'dead'"
            )
            if ids is None:
                status = await conn.execute(sql, now)
            else:
                status = await conn.execute(sql + " AND id = ANY($2::bigint[])", now, list(ids))
            return int(status.split()[-1])

        return await self._call(run)

    async def pending_count(self, account: str | None = None) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            if account is None:
                n = await conn.fetchval("SELECT count(*) FROM outbox WHERE state = 'pending'")
            else:
                n = await conn.fetchval(
                    "SELECT count(*) FROM outbox WHERE state = 'pending' AND account = $1",
                    account,
                )
            return int(n)

        return await self._call(run)

    async def next_due_at(self) -> float | None:
        async def run(conn: asyncpg.Connection) -> float | None:
            v = await conn.fetchval(
                "SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending'"
            )
            return None if v is None else float(v)

        return await self._call(run)

    async def raw_message(self, msg_id: str) -> bytes | None:
        async def run(conn: asyncpg.Connection) -> bytes | None:
            v = await conn.fetchval("SELECT raw FROM bodies WHERE msg_id = $1", msg_id)
            return None if v is None else bytes(v)

        return await self._call(run)

    # -- deletion ------------------------------------------------------------------------------
    async def deletable_uidls(self, account: str) -> list[str]:
        async def run(conn: asyncpg.Connection) -> list[str]:
            rows = await conn.fetch(
                "SELECT uidl FROM outbox WHERE account = $1 AND state = 'delivered' "
                "AND delete_requested AND deleted_at IS NULL "
                "AND last_status BETWEEN 200 AND 299 ORDER BY id",
                account,
            )
            return [r[0] for r in rows]

        return await self._call(run)

    async def mark_deleted(self, account: str, uidls: Collection[str], now: float) -> None:
        if not uidls:
            return

        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE outbox SET deleted_at = $1 WHERE account = $2 "
                "AND uidl = ANY($3::text[]) AND deleted_at IS NULL",
                now,
                account,
                list(uidls),
            )

        await self._call(run)

    # -- status ----------------------------------------------------------------------------------
    async def account_stats(self, now: float) -> list[AccountStats]:
        async def run(conn: asyncpg.Connection) -> list[AccountStats]:
            rows = await conn.fetch(
                "SELECT account, count(*) FILTER (WHERE state = 'pending'), "
                "count(*) FILTER (WHERE state = 'dead'), "
                "min(created_at) FILTER (WHERE state = 'pending') "
                "FROM outbox WHERE state IN ('pending', 'dead') GROUP BY account ORDER BY account"
            )
            return [AccountStats(r[0], int(r[1]), int(r[2]), r[3]) for r in rows]

        return await self._call(run)

    # -- leases ------------------------------------------------------------------------------------
    async def acquire_leases(
        self,
        holder: str,
        accounts: Sequence[str],
        ttl: float,
        now: float,
        max_count: int | None,
    ) -> set[str]:
        wanted = list(dict.fromkeys(accounts))

        async def run(conn: asyncpg.Connection) -> set[str]:
            held_rows = await conn.fetch(
                "UPDATE leases SET expires_at = $3 WHERE holder = $1 AND expires_at > $2 "
                "AND account = ANY($4::text[]) RETURNING account",
                holder,
                now,
                now + ttl,
                wanted,
            )
            result = {r[0] for r in held_rows}
            held_total = await conn.fetchval(
                "SELECT count(*) FROM leases WHERE holder = $1 AND expires_at > $2", holder, now
            )
            need = None if max_count is None else max_count - int(held_total)
            if need is not None and need <= 0:
                return result
            free = await conn.fetch(
                "SELECT t.a FROM unnest($1::text[]) WITH ORDINALITY AS t(a, n) "
                "LEFT JOIN leases l ON l.account = t.a "
                "WHERE l.account IS NULL OR l.expires_at <= $2 ORDER BY t.n",
                wanted,
                now,
            )
            candidates = [r[0] for r in free]
            while candidates and (need is None or need > 0):
                take = candidates if need is None else candidates[:need]
                candidates = [] if need is None else candidates[need:]
                # Sorted, so concurrent acquirers lock rows in one order and cannot deadlock.
                got = await conn.fetch(
                    "INSERT INTO leases (account, holder, expires_at) "
                    "SELECT a, $2, $3 FROM unnest($1::text[]) AS t(a) ORDER BY a "
                    "ON CONFLICT (account) DO UPDATE SET holder = excluded.holder, "
                    "expires_at = excluded.expires_at WHERE leases.expires_at <= $4 "
                    "RETURNING account",
                    sorted(take),
                    holder,
                    now + ttl,
                    now,
                )
                result.update(r[0] for r in got)
                if need is not None:
                    need -= len(got)
            return result

        return await self._call(run)

    async def renew_leases(self, holder: str, ttl: float, now: float) -> set[str]:
        async def run(conn: asyncpg.Connection) -> set[str]:
            rows = await conn.fetch(
                "UPDATE leases SET expires_at = $3 WHERE holder = $1 AND expires_at > $2 "
                "RETURNING account",
                holder,
                now,
                now + ttl,
            )
            return {r[0] for r in rows}

        return await self._call(run)

    async def release_leases(self, holder: str, accounts: Collection[str] | None = None) -> None:
        async def run(conn: asyncpg.Connection) -> None:
            if accounts is None:
                await conn.execute("DELETE FROM leases WHERE holder = $1", holder)
            else:
                await conn.execute(
                    "DELETE FROM leases WHERE holder = $1 AND account = ANY($2::text[])",
                    holder,
                    list(accounts),
                )

        await self._call(run)

    async def lease_holders(self, now: float) -> dict[str, str]:
        async def run(conn: asyncpg.Connection) -> dict[str, str]:
            rows = await conn.fetch("SELECT account, holder FROM leases WHERE expires_at > $1", now)
            return {r[0]: r[1] for r in rows}

        return await self._call(run)

    async def heartbeat(self, holder: str, now: float, ttl: float) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            await conn.execute("DELETE FROM replicas WHERE expires_at <= $1", now)
            await conn.execute(
                "INSERT INTO replicas (holder, expires_at) VALUES ($1, $2) "
                "ON CONFLICT (holder) DO UPDATE SET expires_at = excluded.expires_at",
                holder,
                now + ttl,
            )
            n = await conn.fetchval("SELECT count(*) FROM replicas WHERE expires_at > $1", now)
            return int(n)

        return await self._call(run, tx=True)

    async def live_replicas(self, now: float) -> list[str]:
        async def run(conn: asyncpg.Connection) -> list[str]:
            rows = await conn.fetch(
                "SELECT holder FROM replicas WHERE expires_at > $1 ORDER BY holder", now
            )
            return [r[0] for r in rows]

        return await self._call(run)

    # -- accounts --------------------------------------------------------------------------------
    async def add_account(self, name: str, config: dict[str, Any], now: float) -> None:
        blob = orjson.dumps(config).decode()

        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO accounts (name, config, created_at, updated_at) "
                "VALUES ($1, $2::jsonb, $3, $3) ON CONFLICT (name) DO UPDATE "
                "SET config = excluded.config, updated_at = excluded.updated_at",
                name,
                blob,
                now,
            )

        await self._call(run)

    async def list_accounts(self) -> list[tuple[str, dict[str, Any]]]:
        async def run(conn: asyncpg.Connection) -> list[tuple[str, dict[str, Any]]]:
            rows = await conn.fetch("SELECT name, config::text FROM accounts ORDER BY name")
            return [(r[0], orjson.loads(r[1])) for r in rows]

        return await self._call(run)

    async def remove_account(self, name: str) -> bool:
        async def run(conn: asyncpg.Connection) -> bool:
            status = await conn.execute("DELETE FROM accounts WHERE name = $1", name)
            return bool(status.endswith(" 1"))

        return await self._call(run)

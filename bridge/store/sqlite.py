"""SQLite store: the single-replica default.

Durability choices
------------------
* WAL journal: readers never block the writer, and a commit is one append to the WAL, so a
  SIGKILL at any instant leaves either the whole transaction or none of it.
* `synchronous=NORMAL` by default (`?synchronous=full` in the URL to change it). In WAL mode
  NORMAL loses nothing on a process crash (SIGKILL, OOM kill): the commit is in the OS page
  cache and the next open replays it. Only an OS crash or power cut can drop the last few
  commits, and for this bridge that is at worst a duplicate, never a loss: a message is deleted
  on the POP3 server only after its delivery was committed, and the WAL keeps commits in order,
  so losing `mark_delivered` means re-delivering (at-least-once) and losing `record` means the
  message is fetched again. FULL would add an fsync to every `mark_delivered`, which caps
  delivery at the disk's fsync rate.
* A full disk surfaces as `StoreFull`; SQLite rolls the transaction back, so nothing is half
  written and the file stays readable.

Concurrency
-----------
We use the standard library's `sqlite3` on ONE dedicated thread and run each store method as a
single function on it, instead of aiosqlite's statement-by-statement proxy. Two reasons: a
method is one thread hop instead of one per statement (record() of 100 messages is one hop),
and no coroutine can slip a statement into another coroutine's open transaction on the shared
connection, which aiosqlite allows when two tasks use one connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

import orjson

from bridge.store.base import AccountStats, DeadLetter, NewMessage, OutboxItem, Store
from bridge.store.errors import StoreError, StoreFull, StoreUnavailable

__all__ = ["SQLiteStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Each entry brings the schema from version i to i+1. Never edit a released entry: append.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE seen (
        account     TEXT NOT NULL,
        uidl        TEXT NOT NULL,
        fingerprint TEXT NOT NULL DEFAULT '',
        seen_at     REAL NOT NULL,
        PRIMARY KEY (account, uidl)
    );
    CREATE INDEX seen_fingerprint ON seen (account, fingerprint);
    CREATE TABLE outbox (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        msg_id           TEXT NOT NULL UNIQUE,
        account          TEXT NOT NULL,
        uidl             TEXT NOT NULL,
        webhook          TEXT NOT NULL,
        size             INTEGER NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        created_at       REAL NOT NULL,
        next_attempt_at  REAL NOT NULL,
        claimed_by       TEXT,
        claim_until      REAL,
        last_error       TEXT,
        last_status      INTEGER,
        finished_at      REAL,
        delete_requested INTEGER NOT NULL DEFAULT 0,
        deleted_at       REAL
    );
    CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending';
    CREATE INDEX outbox_account ON outbox (account, uidl);
    CREATE INDEX outbox_dead ON outbox (finished_at, id) WHERE state = 'dead';
    CREATE TABLE bodies (
        msg_id  TEXT PRIMARY KEY REFERENCES outbox (msg_id) ON DELETE CASCADE,
        payload BLOB NOT NULL,
        raw     BLOB
    );
    CREATE TABLE leases (
        account    TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX leases_holder ON leases (holder);
    CREATE TABLE replicas (
        holder     TEXT PRIMARY KEY,
        expires_at REAL NOT NULL
    );
    CREATE TABLE accounts (
        name       TEXT PRIMARY KEY,
        config     TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
)

# Bodies at least this big are written through SQLite's incremental blob I/O instead of being
# bound: binding copies the value (SQLITE_TRANSIENT) and building the row record copies it
# again, so a bound 50 MB message briefly costs three times its size. Streamed, the row is
# inserted with zeroblob() placeholders (SQLite writes those zeros page by page) and then
# filled in place from the caller's buffer, within the same transaction.
STREAM_BLOB_BYTES = 1 << 20


def _is_big(m: NewMessage) -> bool:
    return len(m.payload) + len(m.raw or b"") >= STREAM_BLOB_BYTES


def _insert_streamed(conn: sqlite3.Connection, m: NewMessage) -> None:
    raw_expr = "NULL" if m.raw is None else "zeroblob(?)"
    params: tuple[object, ...] = (m.msg_id, len(m.payload))
    if m.raw is not None:
        params += (len(m.raw),)
    cur = conn.execute(
        # S608: SQL made of constants and placeholders; values are bound.
        f"INSERT OR IGNORE INTO bodies (msg_id, payload, raw) VALUES (?, zeroblob(?), {raw_expr})",  # noqa: S608
        params,
    )
    if cur.rowcount != 1 or cur.lastrowid is None:
        return  # already recorded: INSERT OR IGNORE keeps the first copy, as for small ones
    for column, value in (("payload", m.payload), ("raw", m.raw)):
        if value:
            with conn.blobopen("bodies", column, cur.lastrowid) as blob:
                blob.write(value)


_OUTBOX_COLS = (
    "o.id, o.msg_id, o.account, o.uidl, o.webhook, b.payload, o.attempts, o.created_at, "
    "o.next_attempt_at, o.last_error, o.size, "
    "CASE WHEN substr(b.payload, 1, 1) = x'00' THEN b.raw END"
)
_DEAD_COLS = (
    "id, msg_id, account, uidl, webhook, attempts, created_at, finished_at, last_error, last_status"
)
# SQLite's default limit on bound parameters is 32766 (3.32+); stay far below it.
_CHUNK = 500


def _chunks(items: Sequence[T], size: int = _CHUNK) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _translate(exc: sqlite3.Error, path: str) -> StoreError:
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == sqlite3.SQLITE_FULL:
        return StoreFull(
            f"SQLite database {path}: the disk is full (or the database hit its size limit); "
            "free space on that filesystem, nothing of the failed operation was written"
        )
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreUnavailable(
            f"SQLite database {path} stayed locked by another process; "
            "only one poller may use a SQLite file (use PostgreSQL for several replicas)"
        )
    if primary in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY):
        return StoreUnavailable(
            f"cannot write SQLite database {path}: {exc}; check that the directory exists and "
            "is writable by this user"
        )
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StoreError(
            f"SQLite database {path} is corrupt or not a database ({exc}); restore it from a "
            "backup or move it aside to start with an empty state"
        )
    if primary == sqlite3.SQLITE_IOERR:
        return StoreUnavailable(f"I/O error on SQLite database {path}: {exc}")
    return StoreError(f"SQLite database {path}: {exc}")


class SQLiteStore(Store):
    """`Store` on one SQLite file (or `:memory:`)."""

    def __init__(
        self, path: str, *, synchronous: str = "NORMAL", busy_timeout_ms: int = 5000
    ) -> None:
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise StoreError(
                f"sqlite synchronous={synchronous!r} is not safe here; use normal, full or extra"
            )
        self.path = path
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False

    # -- plumbing -----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0
            )
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            mode = self._enable_wal(conn)
            if self.path != ":memory:" and str(mode).lower() != "wal":
                raise StoreError(
                    f"SQLite database {self.path}: cannot switch to WAL mode (got {mode!r}); "
                    "WAL needs a local filesystem with shared-memory support, not NFS"
                )
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            conn.close()
            raise _translate(exc, self.path) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        # Switching to WAL needs an exclusive lock and SQLite answers SQLITE_BUSY at once,
        # without its busy handler, when another connection (a second process starting at the
        # same moment) holds the file; retry within the busy timeout ourselves.
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        delay = 0.005
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
                if code not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
                if time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def _ensure_open(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError(f"SQLite store {self.path} is closed")
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="pop3bridge-sqlite"
            )

        def call() -> T:
            conn = self._ensure_open()
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, call)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` inside BEGIN IMMEDIATE ... COMMIT (rolled back on any error)."""

        def tx(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back by itself (e.g. after SQLITE_FULL).
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.warning("SQLite rollback failed on %s", self.path, exc_info=True)
                raise
            return result

        return await self._run(tx)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(fn)

    # -- lifecycle -----------------------------------------------------------------------------
    async def migrate(self) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = int(row[0]) if row[0] is not None else 0
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"SQLite database {self.path} has schema version {current}, newer than this "
                    f"pop3bridge understands ({len(MIGRATIONS)}); upgrade pop3bridge"
                )
            for version in range(current, len(MIGRATIONS)):
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version + 1,))
                log.info("SQLite store %s migrated to schema version %d", self.path, version + 1)

        await self._write(tx)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        executor = self._executor
        if executor is None:
            return

        def shut(conn_holder: SQLiteStore = self) -> None:
            if conn_holder._conn is not None:
                conn_holder._conn.close()
                conn_holder._conn = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, shut)
        executor.shutdown(wait=True)
        self._executor = None

    # -- UIDLs ---------------------------------------------------------------------------------
    async def seen_uidls(self, account: str) -> set[str]:
        def q(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute("SELECT uidl FROM seen WHERE account = ?", (account,))
            return {r[0] for r in rows}

        return await self._read(q)

    async def record(self, messages: Sequence[NewMessage], now: float) -> None:
        if not messages:
            return

        def tx(conn: sqlite3.Connection) -> None:
            by_account: dict[str, list[NewMessage]] = {}
            for m in messages:
                by_account.setdefault(m.account, []).append(m)
            fresh: list[NewMessage] = []
            for account, group in by_account.items():
                known: set[str] = set()
                for chunk in _chunks([m.uidl for m in group]):
                    marks = ",".join("?" * len(chunk))
                    known.update(
                        r[0]
                        for r in conn.execute(
                            # S608: SQL made of constants and placeholders; values are bound.
                            f"SELECT uidl FROM seen WHERE account = ? AND uidl IN ({marks})",  # noqa: S608
                            (account, *chunk),
                        )
                    )
                for m in group:
                    if m.uidl not in known:
                        known.add(m.uidl)  # a duplicate inside one batch is recorded once
                        fresh.append(m)
            if not fresh:
                return
            conn.executemany(
                "INSERT INTO seen (account, uidl, fingerprint, seen_at) VALUES (?, ?, ?, ?)",
                [(m.account, m.uidl, m.fingerprint, now) for m in fresh],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO outbox (msg_id, account, uidl, webhook, size, state, "
                "created_at, next_attempt_at, delete_requested) "
                "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                [
                    (
                        m.msg_id,
                        m.account,
                        m.uidl,
                        m.webhook,
                        m.size,
                        now,
                        now,
                        int(m.delete_after_delivery),
                    )
                    for m in fresh
                ],
            )
            small = [m for m in fresh if not _is_big(m)]
            conn.executemany(
                "INSERT OR IGNORE INTO bodies (msg_id, payload, raw) VALUES (?, ?, ?)",
                [(m.msg_id, m.payload, m.raw) for m in small],
            )
            for m in fresh:
                if _is_big(m):
                    _insert_streamed(conn, m)

        await self._write(tx)

    async def mark_seen(self, account: str, items: Sequence[tuple[str, str]], now: float) -> None:
        if not items:
            return

        def tx(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO seen (account, uidl, fingerprint, seen_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (account, uidl) DO UPDATE SET fingerprint = excluded.fingerprint",
                [(account, uidl, fp, now) for uidl, fp in items],
            )

        await self._write(tx)

    async def known_fingerprints(self, account: str, fingerprints: Collection[str]) -> set[str]:
        wanted = list(set(fingerprints))
        if not wanted:
            return set()

        def q(conn: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for chunk in _chunks(wanted):
                marks = ",".join("?" * len(chunk))
                found.update(
                    r[0]
                    for r in conn.execute(
                        # S608: SQL made of constants and placeholders; values are bound.
                        "SELECT DISTINCT fingerprint FROM seen "  # noqa: S608
                        f"WHERE account = ? AND fingerprint IN ({marks})",
                        (account, *chunk),
                    )
                )
            return found

        return await self._read(q)

    async def forget_missing(self, account: str, present: Collection[str]) -> int:
        keep = set(present)

        def tx(conn: sqlite3.Connection) -> int:
            seen = [
                r[0] for r in conn.execute("SELECT uidl FROM seen WHERE account = ?", (account,))
            ]
            gone = [u for u in seen if u not in keep]
            if not gone:
                return 0
            busy: set[str] = set()
            for chunk in _chunks(gone):
                marks = ",".join("?" * len(chunk))
                busy.update(
                    r[0]
                    for r in conn.execute(
                        # S608: SQL made of constants and placeholders; values are bound.
                        "SELECT uidl FROM outbox WHERE account = ? "  # noqa: S608
                        f"AND uidl IN ({marks}) AND (state IN ('pending', 'dead') "
                        "OR (delete_requested = 1 AND deleted_at IS NULL))",
                        (account, *chunk),
                    )
                )
            drop = [(account, u) for u in gone if u not in busy]
            # Finished outbox rows of vanished messages go too (bodies cascade), so a mailbox that
            # keeps its mail on the server bounds the store by the mailbox size.
            conn.executemany(
                "DELETE FROM outbox WHERE account = ? AND uidl = ? AND state = 'delivered'", drop
            )
            conn.executemany("DELETE FROM seen WHERE account = ? AND uidl = ?", drop)
            return len(drop)

        return await self._write(tx)

    # -- outbox ------------------------------------------------------------------------------------
    async def claim_due(
        self, now: float, limit: int, holder: str, lease_seconds: float
    ) -> list[OutboxItem]:
        if limit <= 0:
            return []

        def tx(conn: sqlite3.Connection) -> list[OutboxItem]:
            rows = conn.execute(
                # S608: SQL made of constants and placeholders; values are bound.
                f"SELECT {_OUTBOX_COLS} FROM outbox o JOIN bodies b ON b.msg_id = o.msg_id "  # noqa: S608
                "WHERE o.state = 'pending' AND o.next_attempt_at <= ? "
                "AND (o.claim_until IS NULL OR o.claim_until <= ?) "
                "ORDER BY o.next_attempt_at, o.id LIMIT ?",
                (now, now, limit),
            ).fetchall()
            if rows:
                conn.executemany(
                    "UPDATE outbox SET claimed_by = ?, claim_until = ? WHERE id = ?",
                    [(holder, now + lease_seconds, r[0]) for r in rows],
                )
            return [OutboxItem(*r) for r in rows]

        return await self._write(tx)

    async def mark_delivered_many(self, marks: Sequence[tuple[int, int]], now: float) -> None:
        if not marks:
            return

        def tx(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, "
                "last_status = ?, finished_at = ?, claimed_by = NULL, claim_until = NULL "
                "WHERE id = ? AND state != 'delivered'",
                [(status, now, item_id) for item_id, status in marks],
            )

        await self._write(tx)

    async def mark_retry(
        self, item_id: int, next_attempt_at: float, error: str, status: int | None, now: float
    ) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            # Only a pending row: a late worker whose claim expired must not undo a delivery.
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, "
                "last_status = ?, claimed_by = NULL, claim_until = NULL "
                "WHERE id = ? AND state = 'pending'",
                (next_attempt_at, error, status, item_id),
            )

        await self._write(tx)

    async def mark_dead(self, item_id: int, error: str, status: int | None, now: float) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?, "
                "last_status = ?, finished_at = ?, claimed_by = NULL, claim_until = NULL "
                "WHERE id = ? AND state = 'pending'",
                (error, status, now, item_id),
            )

        await self._write(tx)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        def q(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(
                # S608: SQL made of constants and placeholders; values are bound.
                f"SELECT {_DEAD_COLS} FROM outbox WHERE state = 'dead' "  # noqa: S608
                "ORDER BY finished_at, id LIMIT ?",
                (limit,),
            )
            return [DeadLetter(*r) for r in rows]

        return await self._read(q)

    async def replay(self, ids: Sequence[int] | None, now: float) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            sql = (
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, "
                "finished_at = NULL, claimed_by = NULL, claim_until = NULL "
                "WHERE state = 'dead'"
            )
            if ids is None:
                return conn.execute(sql, (now,)).rowcount
            total = 0
            for chunk in _chunks(list(ids)):
                marks = ",".join("?" * len(chunk))
                total += conn.execute(f"{sql} AND id IN ({marks})", (now, *chunk)).rowcount
            return total

        return await self._write(tx)

    async def pending_count(self, account: str | None = None) -> int:
        def q(conn: sqlite3.Connection) -> int:
            if account is None:
                row = conn.execute("SELECT count(*) FROM outbox WHERE state = 'pending'")
            else:
                row = conn.execute(
                    "SELECT count(*) FROM outbox WHERE state = 'pending' AND account = ?",
                    (account,),
                )
            return int(row.fetchone()[0])

        return await self._read(q)

    async def next_due_at(self) -> float | None:
        def q(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                "SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending'"
            ).fetchone()
            return None if row[0] is None else float(row[0])

        return await self._read(q)

    async def raw_message(self, msg_id: str) -> bytes | None:
        def q(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute("SELECT raw FROM bodies WHERE msg_id = ?", (msg_id,)).fetchone()
            return None if row is None or row[0] is None else bytes(row[0])

        return await self._read(q)

    # -- deletion ------------------------------------------------------------------------------
    async def deletable_uidls(self, account: str) -> list[str]:
        def q(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT uidl FROM outbox WHERE account = ? AND state = 'delivered' "
                "AND delete_requested = 1 AND deleted_at IS NULL "
                "AND last_status BETWEEN 200 AND 299 ORDER BY id",
                (account,),
            )
            return [r[0] for r in rows]

        return await self._read(q)

    async def mark_deleted(self, account: str, uidls: Collection[str], now: float) -> None:
        if not uidls:
            return

        def tx(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE outbox SET deleted_at = ? WHERE account = ? AND uidl = ? "
                "AND deleted_at IS NULL",
                [(now, account, u) for u in uidls],
            )

        await self._write(tx)

    # -- status ----------------------------------------------------------------------------------
    async def account_stats(self, now: float) -> list[AccountStats]:
        def q(conn: sqlite3.Connection) -> list[AccountStats]:
            rows = conn.execute(
                "SELECT account, sum(state = 'pending'), sum(state = 'dead'), "
                "min(CASE WHEN state = 'pending' THEN created_at END) "
                "FROM outbox WHERE state IN ('pending', 'dead') GROUP BY account ORDER BY account"
            )
            return [
                AccountStats(r[0], int(r[1]), int(r[2]), None if r[3] is None else float(r[3]))
                for r in rows
            ]

        return await self._read(q)

    # -- leases ------------------------------------------------------------------------------------
    async def acquire_leases(
        self,
        holder: str,
        accounts: Sequence[str],
        ttl: float,
        now: float,
        max_count: int | None,
    ) -> set[str]:
        def tx(conn: sqlite3.Connection) -> set[str]:
            held = {
                r[0]
                for r in conn.execute(
                    "SELECT account FROM leases WHERE holder = ? AND expires_at > ?",
                    (holder, now),
                )
            }
            result: set[str] = set()
            for account in dict.fromkeys(accounts):
                if account in held:
                    conn.execute(
                        "UPDATE leases SET expires_at = ? WHERE account = ?",
                        (now + ttl, account),
                    )
                    result.add(account)
            for account in dict.fromkeys(accounts):
                if account in held:
                    continue
                if max_count is not None and len(held) >= max_count:
                    break
                cur = conn.execute(
                    "INSERT INTO leases (account, holder, expires_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (account) DO UPDATE SET holder = excluded.holder, "
                    "expires_at = excluded.expires_at WHERE leases.expires_at <= ?",
                    (account, holder, now + ttl, now),
                )
                if cur.rowcount:
                    held.add(account)
                    result.add(account)
            return result

        return await self._write(tx)

    async def renew_leases(self, holder: str, ttl: float, now: float) -> set[str]:
        def tx(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "UPDATE leases SET expires_at = ? WHERE holder = ? AND expires_at > ? "
                "RETURNING account",
                (now + ttl, holder, now),
            ).fetchall()
            return {r[0] for r in rows}

        return await self._write(tx)

    async def release_leases(self, holder: str, accounts: Collection[str] | None = None) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            if accounts is None:
                conn.execute("DELETE FROM leases WHERE holder = ?", (holder,))
            else:
                conn.executemany(
                    "DELETE FROM leases WHERE holder = ? AND account = ?",
                    [(holder, a) for a in accounts],
                )

        await self._write(tx)

    async def lease_holders(self, now: float) -> dict[str, str]:
        def q(conn: sqlite3.Connection) -> dict[str, str]:
            rows = conn.execute("SELECT account, holder FROM leases WHERE expires_at > ?", (now,))
            return {r[0]: r[1] for r in rows}

        return await self._read(q)

    async def heartbeat(self, holder: str, now: float, ttl: float) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM replicas WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO replicas (holder, expires_at) VALUES (?, ?) "
                "ON CONFLICT (holder) DO UPDATE SET expires_at = excluded.expires_at",
                (holder, now + ttl),
            )
            return int(conn.execute("SELECT count(*) FROM replicas").fetchone()[0])

        return await self._write(tx)

    async def live_replicas(self, now: float) -> list[str]:
        def q(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT holder FROM replicas WHERE expires_at > ? ORDER BY holder", (now,)
            )
            return [r[0] for r in rows]

        return await self._read(q)

    # -- accounts --------------------------------------------------------------------------------
    async def add_account(self, name: str, config: dict[str, Any], now: float) -> None:
        blob = orjson.dumps(config).decode()

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO accounts (name, config, created_at, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET config = excluded.config, "
                "updated_at = excluded.updated_at",
                (name, blob, now, now),
            )

        await self._write(tx)

    async def list_accounts(self) -> list[tuple[str, dict[str, Any]]]:
        def q(conn: sqlite3.Connection) -> list[tuple[str, dict[str, Any]]]:
            rows = conn.execute("SELECT name, config FROM accounts ORDER BY name").fetchall()
            return [(r[0], orjson.loads(r[1])) for r in rows]

        return await self._read(q)

    async def remove_account(self, name: str) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM accounts WHERE name = ?", (name,)).rowcount > 0

        return await self._write(tx)

"""SQLite adapter of the SQL store: the single-replica default.

The statements are `bridge.store.sqlstore.SQLStore`'s; this module connects, sets the pragmas
below, runs each store method on the database thread and names SQLite's errors.

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
* 16 KiB pages for a new database (`PAGE_SIZE`; an existing one keeps the size it was made
  with). A ~5 KB message then fits in its row instead of spilling onto an overflow page, and
  commits and checkpoints make a third of the system calls (recording 2,000 such messages:
  20,147 -> 6,147 `pwrite`s) and cost 36 -> 26 us of the database thread's CPU per message.
  The WAL is checkpointed every `CHECKPOINT_BYTES` whatever the page size (SQLite counts the
  threshold in pages).
* A full disk surfaces as `StoreFull`; SQLite rolls the transaction back, so nothing is half
  written and the file stays readable.

Concurrency
-----------
We use the standard library's `sqlite3` on ONE dedicated thread and drive each store method's
statement generator (`bridge.store.sql`) to its end on it, inside one transaction, instead of
aiosqlite. aiosqlite proxies one statement per call (its only way to run a function on its
thread is the private `Connection._execute`), which costs a thread hop per statement where
this is one per method (record() of 100 messages is one hop), and it lets another coroutine
slip a statement into an open transaction on the shared connection.

Group commit
------------
Write transactions (`@write`, `@atomic`) that queue while the database thread is busy run
together: one `BEGIN IMMEDIATE`, each body in a `SAVEPOINT` of its own, one `COMMIT`, then every
caller is woken with one call into its event loop. With a thousand accounts polled ten at a
time, each session's `mark_polled` and `record` and the delivery worker's claims and marks were
a commit each, and every commit appends each page it touched to the WAL (16 KiB each, see
above) and a thread hop; grouped, the pages shared by neighbouring transactions (the indexes'
last leaves, the custody table's end) are written once per group. Nothing waits to form a
group: the first transaction runs at once, the ones that arrive meanwhile form the next (at
most `GROUP_MAX`), submitted behind any read that queued meanwhile. What a caller is told is
what happened to its own body:

* a caller is answered only after the COMMIT that made its body durable, so an awaited write is
  as durable as before (a duplicate after a crash, never a loss: see above);
* a body that raises is rolled back to its savepoint and its caller gets the error, while the
  rest of the group commits, as if each had been a transaction of its own; bodies see what the
  bodies before them in the group wrote, as they would have after those committed;
* when SQLite rolls the whole transaction back by itself (`SQLITE_FULL` and the like), the
  bodies before the failing one are lost with it and their callers get the same error (a write
  the store could not make, as when it fails alone); the rest continue in a new transaction;
* a failed COMMIT fails every caller of the group;
* a caller that stopped waiting (cancelled) before its body ran has its body skipped, as a
  queued `run_in_executor` job would have been.
Statement journal
-----------------
A multi-row INSERT that could fail part-way (a NOT NULL, CHECK or foreign key) inside a
transaction must be undoable alone, so SQLite copies every existing page it is about to change
into a statement journal first, a temp file (`/var/tmp/etilqs_*`) once it passes 64 KiB. The
outbox and custody tables have indexes keyed by hashes (`msg_id`, Message-ID), so that is about
one 16 KiB page per recorded row and index: recording 2,000 messages into a store that held
20,000 wrote 148 MB, half of it to that file. A transaction that is one `@bounded` body
(`record`: inserts in chunks of `_ROWS_PER_INSERT` rows) runs with `temp_store = MEMORY`, so
the journal stays in memory (a few MB per statement, freed when the statement ends); every
other transaction, and any group of several bodies (whose savepoints journal each body whole),
keeps the default, so a large delete (`forget_missing` of an emptied mailbox, `purge_custody`)
still spills to disk instead of holding every page it changes in RAM. The journal only undoes
a failed statement; it plays no part in durability.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import orjson

from bridge.store import sql
from bridge.store.base import NewMessage
from bridge.store.errors import StoreError, StoreFull, StoreUnavailable
from bridge.store.sqlstore import SQLStore

__all__ = ["SQLiteDialect", "SQLiteStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Page size of a database this store creates (module docstring); SQLite ignores it for an
# existing one. And how much WAL gathers before a commit checkpoints it into the database.

PAGE_SIZE = 16384
CHECKPOINT_BYTES = 4 << 20

# Bodies at least this big are written through SQLite's incremental blob I/O instead of being
# bound: binding copies the value (SQLITE_TRANSIENT) and building the row record copies it
# again, so a bound 50 MB message briefly costs three times its size. Streamed, the row is
# inserted with zeroblob() placeholders (SQLite writes those zeros page by page) and then
# filled in place from the caller's buffer, within the same transaction.
STREAM_BLOB_BYTES = 1 << 20

# At most this many write transactions share one COMMIT (see "Group commit" above).
GROUP_MAX = 64


def _is_big(m: NewMessage) -> bool:
    return len(m.payload) + len(m.raw or b"") >= STREAM_BLOB_BYTES


def _insert_streamed(conn: sqlite3.Connection, row_id: int, message: NewMessage) -> None:
    m = message
    raw_expr = "NULL" if m.raw is None else "zeroblob(?)"
    params: tuple[object, ...] = (row_id, len(m.payload))
    if m.raw is not None:
        params += (len(m.raw),)
    conn.execute(
        f"INSERT INTO bodies (id, payload, raw) VALUES (?, zeroblob(?), {raw_expr})", params
    )
    for column, value in (("payload", m.payload), ("raw", m.raw)):
        if value:
            with conn.blobopen("bodies", column, row_id) as blob:
                blob.write(value)


# Rows per multi-row INSERT: one statement (and one `sqlite3_step`) per chunk, not one per row.
# executemany steps once per row and takes the GIL back after each step; on the database
# thread that was most of `record`'s time while the event loop thread was busy (the fetch
# stage: 100 rows x 4 tables per batch). 100 rows keep a statement of the custody table's 9
# columns under the 999 variables older SQLite builds allow.
_ROWS_PER_INSERT = 100


def _insert_chunks(
    head: str, width: int, rows: Sequence[Sequence[Any]], tail: str, conn: sqlite3.Connection
) -> Iterator[tuple[Sequence[Sequence[Any]], sqlite3.Cursor]]:
    """`head VALUES (...), (...) tail` over `rows`, in chunks: the same rows, in the same
    order, as executemany (ON CONFLICT applies row by row within a statement too); each
    chunk with the cursor of its statement, once executed."""
    one = "(" + ", ".join("?" * width) + ")"
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        values = ", ".join([one] * len(chunk))
        yield (
            chunk,
            conn.execute(f"{head} VALUES {values} {tail}", [v for row in chunk for v in row]),
        )


def _insert_rows(
    head: str, width: int, rows: Sequence[Sequence[Any]], tail: str, conn: sqlite3.Connection
) -> None:
    """`_insert_chunks`, run to the end."""
    for _chunk, _cursor in _insert_chunks(head, width, rows, tail, conn):
        pass


def _insert_ids(
    head: str,
    width: int,
    rows: Sequence[Sequence[Any]],
    tail: str,
    table: str,
    key: str,
    conn: sqlite3.Connection,
) -> list[tuple[int, Any]]:
    """`_insert_rows`, and `(id, row[0])` of each row inserted now (`Dialect.insert_ids`),
    without RETURNING.

    RETURNING hands over each row it returns in a `sqlite3_step` of its own, and sqlite3 lets
    go of the GIL around every step: that is a hand-off per recorded message, and while the
    event loop is busy (a fetch) taking the GIL back can wait up to the interpreter's switch
    interval (5 ms). The ids are known without it: `id` is `INTEGER PRIMARY KEY
    AUTOINCREMENT`, so a statement's new rows take the next ids in the order of its VALUES,
    each above every id the table ever had. When every row of a chunk went in (`rowcount`,
    the usual case) they are the ids up to `lastrowid`; when `tail` skipped some (a message
    another replica recorded first), the rows inserted now are the `rowcount` newest among
    the chunk's keys, asked for by one indexed query."""
    inserted: list[tuple[int, Any]] = []
    for chunk, cur in _insert_chunks(head, width, rows, tail, conn):
        added, last = cur.rowcount, cur.lastrowid
        if added == len(chunk) and last is not None:
            keys = [row[0] for row in chunk]
            inserted += zip(range(last - added + 1, last + 1), keys, strict=True)
        elif added > 0:
            inserted += conn.execute(
                f"SELECT id, {key} FROM {table} WHERE {key} IN "
                "(SELECT value FROM json_each(?)) ORDER BY id DESC LIMIT ?",
                (orjson.dumps([row[0] for row in chunk]).decode(), added),
            ).fetchall()
    return inserted


class SQLiteDialect(sql.Dialect):
    name = "sqlite"
    # One writer at a time (BEGIN IMMEDIATE): a claim never races another.
    skip_locked = ""
    # The same values as SQLite stores a bool: sqlite3 binds an int at once, but adapts a bool
    # through its protocol first (a failed attribute look-up that formats an AttributeError:
    # ~2 K instructions a value on the database thread, holding the GIL).
    flags = (0, 1)

    def in_list(self, expr: str, kind: str) -> str:
        return f"{expr} IN (SELECT value FROM json_each(?))"

    def array_table(self, kind: str) -> str:
        return "(SELECT value AS v, key AS n FROM json_each(?)) AS t"

    def pairs_table(self, pairs: Sequence[tuple[str, str]]) -> tuple[str, tuple[Any, ...]]:
        table = "(SELECT value ->> 0 AS a, value ->> 1 AS u FROM json_each(?)) AS t"
        return table, (orjson.dumps(pairs).decode(),)

    def array(self, values: Collection[Any]) -> Any:
        # One JSON argument whatever the length: no chunking under SQLite's parameter limit.
        return orjson.dumps(list(values)).decode()

    def insert_many(self, table: str, columns: sql.Columns, rows: sql.Rows, tail: str) -> sql.Op:
        names = ", ".join(name for name, _ in columns)
        return sql.Native(
            functools.partial(
                _insert_rows, f"INSERT INTO {table} ({names})", len(columns), rows, tail
            )
        )

    def insert_ids(self, table: str, columns: sql.Columns, rows: sql.Rows, tail: str) -> sql.Op:
        names = ", ".join(name for name, _ in columns)
        return sql.Native(
            functools.partial(
                _insert_ids,
                f"INSERT INTO {table} ({names})",
                len(columns),
                rows,
                tail,
                table,
                columns[0][0],
            )
        )

    def insert_bodies(self, rows: Sequence[tuple[int, NewMessage]]) -> sql.Tx[None]:
        small = [(row_id, m) for row_id, m in rows if not _is_big(m)]
        if small:
            yield from super().insert_bodies(small)
        for row_id, m in rows:
            if _is_big(m):
                yield sql.Native(functools.partial(_insert_streamed, row_id=row_id, message=m))


def _perform(conn: sqlite3.Connection, op: sql.Op) -> Any:
    if isinstance(op, sql.Fetch):
        return conn.execute(op.sql, op.args).fetchall()
    if isinstance(op, sql.Execute):
        return conn.execute(op.sql, op.args).rowcount
    if isinstance(op, sql.Many):
        conn.executemany(op.sql, op.rows)
        return None
    if isinstance(op, sql.Script):
        for statement in op.sql.split(";"):
            if statement.strip():
                conn.execute(statement)
        return None
    return op.fn(conn)


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


@dataclass(slots=True)
class _Queued:
    """A write transaction waiting for the database thread (`SQLiteStore._transact`)."""

    body: sql.Tx[Any]
    first: sql.Op
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    bounded: bool = False  # an `@bounded` body ("Statement journal" above)


# (transaction, its value, or the exception it ends with)
_Outcome = tuple[_Queued, Any, BaseException | None]


def _steps(conn: sqlite3.Connection, body: sql.Tx[T], first: sql.Op) -> T:
    """Drive `body` from its `first` operation to its end on `conn`."""
    step: sql.Op | sql.Done[T] = first
    while not isinstance(step, sql.Done):
        step = sql.advance(body, _perform(conn, step))
    return step.value


def _settle(outcomes: list[_Outcome]) -> None:
    """On the event loop: hand each caller of a committed (or failed) group its outcome."""
    for q, value, exc in outcomes:
        if q.future.done():
            continue  # cancelled meanwhile
        if exc is None:
            q.future.set_result(value)
        else:
            q.future.set_exception(exc)


class SQLiteStore(SQLStore):
    """`Store` on one SQLite file (or `:memory:`)."""

    def __init__(
        self, path: str, *, synchronous: str = "NORMAL", busy_timeout_ms: int = 5000
    ) -> None:
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise StoreError(
                f"sqlite synchronous={synchronous!r} is not safe here; use normal, full or extra"
            )
        self.path = path
        self.where = f"SQLite database {path}"
        self.dialect = SQLiteDialect()
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        # Write transactions waiting for the database thread, and whether a group job is
        # submitted or running (both guarded by the lock: the loop appends, the thread takes).
        self._lock = threading.Lock()
        self._queue: collections.deque[_Queued] = collections.deque()
        self._draining = False
        # Whether the connection's temp_store is MEMORY now ("Statement journal" above).
        self._journal_in_memory = False

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
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # before WAL writes the header
            mode = self._enable_wal(conn)
            if self.path != ":memory:" and str(mode).lower() != "wal":
                raise StoreError(
                    f"SQLite database {self.path}: cannot switch to WAL mode (got {mode!r}); "
                    "WAL needs a local filesystem with shared-memory support, not NFS"
                )
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            page = int(conn.execute("PRAGMA page_size").fetchone()[0])
            conn.execute(f"PRAGMA wal_autocheckpoint = {max(1, CHECKPOINT_BYTES // page)}")
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

    def _executor_now(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._closed:
            raise StoreError(f"SQLite store {self.path} is closed")
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="pop3bridge-sqlite"
            )
        return self._executor

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        executor = self._executor_now()

        def call() -> T:
            conn = self._ensure_open()
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, call)

    async def _transact(self, body: sql.Tx[T], mode: sql.Mode) -> T:
        first = sql.advance(body, first=True)
        if isinstance(first, sql.Done):
            return first.value  # nothing to run (an empty batch): no hop, no transaction
        if mode == "read":
            return await self._run(functools.partial(_steps, body=body, first=first))
        executor = self._executor_now()
        loop = asyncio.get_running_loop()
        queued = _Queued(body, first, loop.create_future(), loop, mode == "bounded")
        with self._lock:
            self._queue.append(queued)
            start, self._draining = not self._draining, True
        if start:
            executor.submit(self._commit_group)
        return cast(T, await queued.future)

    def _commit_group(self) -> None:
        """The database thread's job while writes are queued: commit the next group (see
        "Group commit" in the module docstring); what queued meanwhile goes in a next job,
        behind any read that queued meanwhile."""
        self._commit_next()
        with self._lock:
            more = bool(self._queue)
            self._draining = more
        if more and self._executor is not None:
            self._executor.submit(self._commit_group)

    def _commit_next(self) -> None:
        """Run up to `GROUP_MAX` queued write transactions as one, and settle each caller."""
        with self._lock:
            group = [self._queue.popleft() for _ in range(min(GROUP_MAX, len(self._queue)))]
        if not group:
            return
        outcomes: list[_Outcome]
        try:
            outcomes = self._run_group(group)
        except BaseException as exc:  # not even BEGIN or the connection: every body fails
            failure = _translate(exc, self.path) if isinstance(exc, sqlite3.Error) else exc
            outcomes = [(q, None, failure) for q in group]
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, settled)

    def _run_group(self, group: list[_Queued]) -> list[_Outcome]:
        conn = self._ensure_open()
        savepoints = len(group) > 1
        memory = not savepoints and group[0].bounded  # "Statement journal" above
        if memory != self._journal_in_memory:
            conn.execute(f"PRAGMA temp_store = {'MEMORY' if memory else 'DEFAULT'}")
            self._journal_in_memory = memory
        done: list[_Outcome] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for q in group:
                if q.future.cancelled():
                    # Its caller stopped waiting before it ran (a run_in_executor job would
                    # not have run either).
                    q.body.close()
                    continue
                if savepoints:
                    conn.execute("SAVEPOINT g")
                try:
                    value = _steps(conn, q.body, q.first)
                except BaseException as exc:
                    failure = _translate(exc, self.path) if isinstance(exc, sqlite3.Error) else exc
                    if not conn.in_transaction:
                        # SQLite rolled the whole transaction back by itself (SQLITE_FULL and
                        # the like): what the bodies before this one did is gone too, so they
                        # fail with the same error, and the rest start a transaction of their
                        # own.
                        done = [(d[0], None, d[2] or failure) for d in done]
                        done.append((q, None, failure))
                        conn.execute("BEGIN IMMEDIATE")
                        continue
                    if savepoints:
                        conn.execute("ROLLBACK TO g")
                        conn.execute("RELEASE g")
                    else:
                        conn.execute("ROLLBACK")
                        conn.execute("BEGIN IMMEDIATE")
                    done.append((q, None, failure))
                    continue
                if savepoints:
                    conn.execute("RELEASE g")
                done.append((q, value, None))
            conn.execute("COMMIT")
        except BaseException as exc:
            failure = _translate(exc, self.path) if isinstance(exc, sqlite3.Error) else exc
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.warning("SQLite rollback failed on %s", self.path, exc_info=True)
            ran = {id(d[0]) for d in done}
            failed: list[_Outcome] = [(d[0], None, d[2] or failure) for d in done]
            return failed + [(q, None, failure) for q in group if id(q) not in ran]
        return done

    # -- lifecycle -----------------------------------------------------------------------------
    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        executor = self._executor
        if executor is None:
            return

        def shut(conn_holder: SQLiteStore = self) -> None:
            while conn_holder._queue:  # writes queued before the close still run
                conn_holder._commit_next()
            if conn_holder._conn is not None:
                conn_holder._conn.close()
                conn_holder._conn = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, shut)
        executor.shutdown(wait=True)
        self._executor = None

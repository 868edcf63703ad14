"""Databases made by released schema versions migrate to the current one and keep their data.

`released/<backend>_v1.sql` is the version-1 schema exactly as each backend shipped it before
the two became one SQL store; a database is built from it with the bare driver, filled the way
that code filled it, and then opened by today's store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import orjson
import pytest

from bridge.store import SeenState, Store, open_store
from bridge.store.base import deferred_payload
from bridge.store.schema import MIGRATIONS

from .helpers import make_message

T0 = 1_700_000_000.0
RELEASED = Path(__file__).parent / "released"

# Rows as version 1 held them (booleans as the backend stored them are filled in per backend).
SEEN = [
    ("a", "u1", "fp1", T0),
    ("a", "u2", "fp2", T0),
    ("a", "u3", "fp3", T0),
    # Version 1 kept "this account was polled before" as a seen UIDL no real one can be.
    ("a", " initialised", "", T0 - 60),
    ("empty", " initialised", "", T0 - 30),
]
OUTBOX = [
    # msg_id, account, uidl, webhook, size, state, created_at, next_attempt_at, last_status
    ("m1", "a", "u1", "hook", 3, "pending", T0, T0, None),
    ("m2", "a", "u2", "hook", 3, "delivered", T0, T0, 200),
]
BODIES = [("m1", b'{"n":1}', b"raw1"), ("m2", deferred_payload("mime"), b"raw2")]


def _insert_rows(execute: Any, ph: Sequence[str], true: object) -> None:
    """Fill a version-1 database through `execute(sql, args)`; `ph` are its placeholders."""
    p = ph
    for row in SEEN:
        execute(
            "INSERT INTO seen (account, uidl, fingerprint, seen_at) "
            f"VALUES ({p[0]}, {p[1]}, {p[2]}, {p[3]})",
            row,
        )
    for row in OUTBOX:
        execute(
            "INSERT INTO outbox (msg_id, account, uidl, webhook, size, state, created_at, "
            f"next_attempt_at, last_status, delete_requested) VALUES ({', '.join(p[:9])}, {p[9]})",
            (*row, true),
        )
    for row in BODIES:
        execute(f"INSERT INTO bodies (msg_id, payload, raw) VALUES ({p[0]}, {p[1]}, {p[2]})", row)
    execute(
        f"INSERT INTO leases (account, holder, expires_at) VALUES ({p[0]}, {p[1]}, {p[2]})",
        ("a", "r1", T0 + 30),
    )
    execute(f"INSERT INTO replicas (holder, expires_at) VALUES ({p[0]}, {p[1]})", ("r1", T0 + 30))
    execute(
        "INSERT INTO accounts (name, config, created_at, updated_at) "
        f"VALUES ({p[0]}, {p[1]}, {p[2]}, {p[3]})",
        ("box", orjson.dumps({"url": "pop3://u@h", "webhook": "hook"}).decode(), T0, T0),
    )
    execute(f"INSERT INTO schema_version (version) VALUES ({p[0]})", (1,))


def _make_sqlite_v1(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        for statement in (RELEASED / "sqlite_v1.sql").read_text().split(";"):
            if statement.strip():
                conn.execute(statement)
        _insert_rows(conn.execute, ["?"] * 10, 1)
        conn.execute("COMMIT")
    finally:
        conn.close()


async def _make_postgres_v1(url: str) -> None:
    parts = urlsplit(url)
    schema = parse_qs(parts.query)["schema"][0]
    conn = await asyncpg.connect(urlunsplit(parts._replace(query="")))
    try:
        async with conn.transaction():
            await conn.execute(f'CREATE SCHEMA "{schema}"')
            await conn.execute(f'SET LOCAL search_path = "{schema}"')
            await conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
            await conn.execute((RELEASED / "postgres_v1.sql").read_text())
            pending: list[tuple[str, Sequence[Any]]] = []
            _insert_rows(
                lambda sql, args: pending.append((sql, args)),
                [f"${i}" for i in range(1, 11)],
                True,
            )
            for sql, args in pending:
                await conn.execute(sql, *args)
    finally:
        await conn.close()


@pytest.fixture
async def v1_store(backend: str, store_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    if backend == "sqlite":
        _make_sqlite_v1(tmp_path / "state.db")
    else:
        await _make_postgres_v1(store_url)
    store = open_store(store_url)
    try:
        yield store
    finally:
        await store.close()


async def test_a_version_1_database_migrates_and_keeps_its_data(v1_store: Store) -> None:
    store = v1_store
    await store.migrate()
    await store.migrate()  # idempotent on the migrated database too
    assert await store.seen_uidls("a") == {"u1", "u2", "u3"}
    # The marker became the polled flag, also for an account whose mailbox was emptied.
    assert await store.seen_state("a") == SeenState({"u1", "u2", "u3"}, polled=True)
    assert await store.seen_state("empty") == SeenState(set(), polled=True)
    assert await store.seen_state("never") == SeenState(set(), polled=False)
    assert await store.known_fingerprints("a", ["fp2", "nope"]) == {"fp2"}
    assert await store.pending_count() == 1
    [item] = await store.claim_due(T0 + 1, 10, "w", 30)
    assert (item.msg_id, item.payload, item.raw) == ("m1", b'{"n":1}', None)
    assert await store.raw_message("m2") == b"raw2"
    assert await store.deletable_uidls("a") == ["u2"]
    assert await store.lease_holders(T0) == {"a": "r1"}
    assert await store.live_replicas(T0) == ["r1"]
    assert await store.list_accounts() == [("box", {"url": "pop3://u@h", "webhook": "hook"})]
    await store.mark_delivered(item.id, 200, T0 + 2)
    assert await store.deletable_uidls("a") == ["u1", "u2"]
    # New rows go in beside the old ones; ids keep counting up from the old ones.
    await store.record([make_message("a", "u4")], T0 + 2)
    [new] = await store.claim_due(T0 + 3, 10, "w", 30)
    assert new.uidl == "u4" and new.id > item.id
    assert await store.forget_missing("a", ["u3", "u4"]) == 0  # u1, u2 wait for their deletion
    await store.mark_deleted("a", ["u1", "u2"], T0 + 3)
    assert await store.forget_missing("a", ["u3", "u4"]) == 2
    assert await store.seen_uidls("a") == {"u3", "u4"}


async def test_every_migration_is_applied_once(v1_store: Store, backend: str) -> None:
    await v1_store.migrate()
    other = open_store(v1_store_url(v1_store, backend))
    try:
        await other.migrate()
    finally:
        await other.close()
    versions = await _versions(v1_store)
    assert versions == list(range(1, len(MIGRATIONS) + 1))


def v1_store_url(store: Store, backend: str) -> str:
    if backend == "sqlite":
        return f"sqlite://{store.path}"  # type: ignore[attr-defined]
    return f"{store._dsn}?schema={store.schema}"  # type: ignore[attr-defined]


async def _versions(store: Store) -> list[int]:
    from bridge.store import sql

    def body() -> sql.Tx[list[int]]:
        rows = yield sql.Fetch("SELECT version FROM schema_version ORDER BY version")
        return [int(r[0]) for r in rows]

    return await store._transact(body(), "read")  # type: ignore[attr-defined, no-any-return]


async def test_a_current_schema_is_checked_without_the_write_lock(tmp_path: Path) -> None:
    """Every start migrates; when the schema is current that is a plain read. It used to take
    SQLite's write lock (BEGIN IMMEDIATE) each time, so a start waited for any writer (another
    replica's, a long claim) up to the busy timeout, and failed after it."""
    from bridge.store.sqlite import SQLiteStore

    path = tmp_path / "state.db"
    first = SQLiteStore(str(path))
    await first.migrate()
    await first.close()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process mid-transaction
    try:
        store = SQLiteStore(str(path), busy_timeout_ms=50)
        try:
            await store.migrate()
            assert await store.pending_count() == 0  # reads work under the writer too
        finally:
            await store.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


async def _seen_indexes(store: Store, backend: str) -> set[str]:
    from bridge.store import sql

    def body() -> sql.Tx[set[str]]:
        if backend == "sqlite":
            rows = yield sql.Fetch(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'seen'"
            )
        else:
            rows = yield sql.Fetch(
                "SELECT indexname FROM pg_indexes "
                "WHERE tablename = 'seen' AND schemaname = current_schema()"
            )
        return {str(r[0]) for r in rows}

    return await store._transact(body(), "read")  # type: ignore[attr-defined, no-any-return]


async def test_version_5_drops_the_seen_sets_fingerprint_index(
    v1_store: Store, backend: str
) -> None:
    # Its hashed keys made every commit of fetched mail rewrite most of its pages; the one
    # query that used it reads the account's rows by the primary key (schema.py, version 5).
    await v1_store.migrate()
    indexes = await _seen_indexes(v1_store, backend)
    assert "seen_fingerprint" not in indexes
    assert indexes  # the primary key (account, uidl) stays
    assert await v1_store.known_fingerprints("a", ["fp1", "fp3", "nope"]) == {"fp1", "fp3"}


async def test_known_fingerprints_reads_one_accounts_rows_by_the_primary_key(
    tmp_path: Path,
) -> None:
    from bridge.store.sqlite import SQLiteStore

    store = SQLiteStore(str(tmp_path / "state.db"))
    try:
        await store.migrate()
        await store.mark_seen("a", [(f"u{n}", f"fp{n}") for n in range(50)], T0)
        await store.mark_seen("b", [("u1", "fp7")], T0)
        assert await store.known_fingerprints("a", ["fp7", "fp70"]) == {"fp7"}

        def plan(conn: sqlite3.Connection) -> str:
            rows = conn.execute(
                "EXPLAIN QUERY PLAN SELECT DISTINCT fingerprint FROM seen "
                "WHERE account = ? AND fingerprint IN (SELECT value FROM json_each(?))",
                ("a", '["fp7"]'),
            ).fetchall()
            return " | ".join(str(r[-1]) for r in rows)

        assert "SEARCH seen USING INDEX sqlite_autoindex_seen_1 (account=?)" in await store._run(
            plan
        )
    finally:
        await store.close()


async def test_version_5_migrates_a_database_whose_fingerprint_index_is_already_gone(
    tmp_path: Path,
) -> None:
    from bridge.store.sqlite import SQLiteStore

    path = tmp_path / "state.db"
    _make_sqlite_v1(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP INDEX seen_fingerprint")  # an operator's hand, before the upgrade
    conn.close()
    store = SQLiteStore(str(path))
    try:
        await store.migrate()
        assert await _versions(store) == list(range(1, len(MIGRATIONS) + 1))
        assert await store.known_fingerprints("a", ["fp2"]) == {"fp2"}
    finally:
        await store.close()


async def _run(store: Store, sql_text: str, args: Sequence[Any] = ()) -> list[Any]:
    from bridge.store import sql

    def body() -> sql.Tx[list[Any]]:
        rows = yield sql.Fetch(sql_text, args)
        return [tuple(r) for r in rows]

    return await store._transact(body(), "atomic")  # type: ignore[attr-defined, no-any-return]


async def test_version_6_keys_bodies_by_their_outbox_rows_id(
    v1_store: Store, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database of the released schema 5, bodies keyed by msg_id (hashes: every commit of
    # fetched mail rewrote most of that index's pages), written as schema-5 code wrote them.
    from bridge.store import sqlstore

    monkeypatch.setattr(sqlstore, "MIGRATIONS", MIGRATIONS[:5])
    await v1_store.migrate()
    assert await _versions(v1_store) == [1, 2, 3, 4, 5]
    await _run(
        v1_store,
        "INSERT INTO outbox (msg_id, account, uidl, webhook, size, state, created_at, "
        "next_attempt_at, delete_requested) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        ("m3", "a", "u3", "hook", 4, "pending", T0, T0, False),
    )
    await _run(
        v1_store,
        "INSERT INTO bodies (msg_id, payload, raw) VALUES (?, ?, ?) RETURNING msg_id",
        ("m3", deferred_payload("mime"), b"raw3"),
    )
    ids = dict(await _run(v1_store, "SELECT msg_id, id FROM outbox"))

    monkeypatch.setattr(sqlstore, "MIGRATIONS", MIGRATIONS)
    await v1_store.migrate()
    assert await _versions(v1_store) == list(range(1, len(MIGRATIONS) + 1))
    if backend == "sqlite":
        columns = [r[1] for r in await _run(v1_store, "PRAGMA table_info(bodies)")]
        # The id is the table's rowid: no index to write beside the rows.
        assert await _run(v1_store, "PRAGMA index_list(bodies)") == []
    else:
        columns = [
            r[0]
            for r in await _run(
                v1_store,
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'bodies' "
                "AND table_schema = current_schema() ORDER BY ordinal_position",
            )
        ]
    assert columns == ["id", "payload", "raw"]
    # Every body moved under its row's id with its bytes.
    moved = await _run(v1_store, "SELECT id, payload, raw FROM bodies ORDER BY id")
    assert [(r[0], bytes(r[1]), r[2] and bytes(r[2])) for r in moved] == [
        (ids["m1"], b'{"n":1}', b"raw1"),
        (ids["m2"], deferred_payload("mime"), b"raw2"),
        (ids["m3"], deferred_payload("mime"), b"raw3"),
    ]
    # The readers reach them through the rows.
    items = await v1_store.claim_due(T0 + 1, 10, "w", 30)
    assert [(i.msg_id, i.payload, i.raw) for i in items] == [
        ("m1", b'{"n":1}', None),
        ("m3", deferred_payload("mime"), b"raw3"),
    ]
    assert await v1_store.raw_message("m2") == b"raw2"
    new = make_message("a", "u4")
    await v1_store.record([new], T0 + 2)
    assert await v1_store.raw_message(new.msg_id) == new.raw
    await v1_store.mark_deleted("a", ["u2"], T0 + 3)  # delivered, then deleted: raw goes
    assert await v1_store.raw_message("m2") is None
    assert await v1_store.requeue(["m2", "m3"], T0 + 4) == ["m3"]  # m2 cannot be rebuilt
    # A finished row that leaves the server takes its body with it.
    assert await v1_store.forget_missing("a", ["u1", "u3", "u4"]) == 1
    left = [r[0] for r in await _run(v1_store, "SELECT id FROM bodies ORDER BY id")]
    assert left[:2] == [ids["m1"], ids["m3"]] and len(left) == 3  # and u4's

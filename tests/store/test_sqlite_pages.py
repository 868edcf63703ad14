"""Page size and checkpoint threshold of the SQLite store (bridge/store/sqlite.py).

A database the store creates gets `PAGE_SIZE` pages; one made before (4 KiB, SQLite's default)
keeps its pages and keeps working. Either way the WAL is checkpointed after about
`CHECKPOINT_BYTES`, since SQLite counts that threshold in pages, not bytes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bridge.store import open_store
from bridge.store import sqlite as sqlite_store

from .helpers import make_message

T0 = 1_700_000_000.0


def _pragmas(path: Path) -> tuple[int, int]:
    """(page_size, wal_autocheckpoint) the store's own connection runs with."""
    store = sqlite_store.SQLiteStore(str(path))
    conn = store._connect()
    try:
        return (
            conn.execute("PRAGMA page_size").fetchone()[0],
            conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0],
        )
    finally:
        conn.close()


async def _record_and_read(path: Path) -> bytes | None:
    store = open_store(f"sqlite:///{path}")
    try:
        await store.migrate()
        raw = b"x" * 5000  # fits a 16 KiB page, spills over a 4 KiB one
        await store.record([make_message("a", "u1", raw=raw)], T0)
        return await store.raw_message(make_message("a", "u1").msg_id)
    finally:
        await store.close()


async def test_a_new_database_gets_the_store_page_size(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    assert await _record_and_read(path) == b"x" * 5000
    assert sqlite_store.PAGE_SIZE != 4096
    assert _pragmas(path) == (
        sqlite_store.PAGE_SIZE,
        sqlite_store.CHECKPOINT_BYTES // sqlite_store.PAGE_SIZE,
    )


async def test_an_older_database_keeps_its_pages_and_works(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")  # as the store made it before 16 KiB pages
    conn.execute("CREATE TABLE before (x)")
    conn.close()
    assert await _record_and_read(path) == b"x" * 5000
    assert _pragmas(path) == (4096, sqlite_store.CHECKPOINT_BYTES // 4096)

"""Group commit in the SQLite store (bridge/store/sqlite.py, "Group commit").

Write transactions that queue while the database thread is busy share one COMMIT, each body in
a savepoint of its own. Each test holds the thread with a blocking job, queues writes behind it
and lets it go, so the group is known: every caller must be told what happened to its own body,
and only after the COMMIT that made it durable.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from bridge.store import StoreError, open_store
from bridge.store import sql as sqlmod
from bridge.store.sqlite import SQLiteStore

from .helpers import make_message

T0 = 1_700_000_000.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    assert isinstance(s, SQLiteStore)
    await s.migrate()
    yield s
    await s.close()


class Held:
    """Holds the database thread until `release`; counts the groups committed meanwhile."""

    def __init__(self, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = threading.Event()
        self.groups: list[int] = []
        run_group = SQLiteStore._run_group

        def counting(s: SQLiteStore, group: list[Any]) -> Any:
            self.groups.append(len(group))
            return run_group(s, group)

        monkeypatch.setattr(SQLiteStore, "_run_group", counting)
        self.blocker = asyncio.ensure_future(store._run(lambda _conn: self.gate.wait(10)))

    async def queue(self, *writes: Awaitable[Any]) -> list[asyncio.Task[Any]]:
        tasks = [asyncio.ensure_future(w) for w in writes]
        for _ in range(3):
            await asyncio.sleep(0)  # each task runs up to its await on the queued future
        return tasks

    async def release(self) -> None:
        self.gate.set()
        await self.blocker


async def _results(tasks: list[asyncio.Task[Any]]) -> list[Any]:
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def test_writes_queued_together_share_one_commit_and_each_gets_its_answer(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Held(store, monkeypatch)
    tasks = await held.queue(
        *(store.record([make_message(f"a{i}", "u1")], T0) for i in range(20)),
        store.mark_polled("a0", [], T0),
        # The same message again in the same group: it sees the first copy and adds nothing.
        store.record([make_message("a0", "u1", raw=b"other")], T0),
        store.forget_missing("nobody", []),  # a write with a value of its own
    )
    assert not any(t.done() for t in tasks)
    await held.release()
    results = await _results(tasks)
    assert results == [None] * 22 + [0]
    assert held.groups == [23]
    for i in range(20):
        assert await store.seen_uidls(f"a{i}") == {"u1"}
    assert (await store.seen_state("a0")).polled
    assert await store.raw_message(make_message("a0", "u1").msg_id) == b"raw"
    assert await store.pending_count() == 20


def _failing(store: SQLiteStore, exc: BaseException) -> Awaitable[None]:
    """A write that flags account `broken` as polled, then fails with `exc`."""

    def body() -> sqlmod.Tx[None]:
        yield sqlmod.Execute(
            "INSERT INTO polled (account, first_polled_at) VALUES (?, ?)", ("broken", T0)
        )
        raise exc

    return store._transact(body(), "atomic")


def _violating(store: SQLiteStore) -> Awaitable[None]:
    """A write whose second statement breaks the polled table's primary key."""

    def body() -> sqlmod.Tx[None]:
        for _ in range(2):
            yield sqlmod.Execute(
                "INSERT INTO polled (account, first_polled_at) VALUES (?, ?)", ("twice", T0)
            )

    return store._transact(body(), "atomic")


async def test_a_failing_body_fails_only_its_caller_and_leaves_nothing(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Held(store, monkeypatch)
    tasks = await held.queue(
        store.record([make_message("a", "u1")], T0),
        _failing(store, ValueError("a bug in a body")),
        _violating(store),
        store.record([make_message("b", "u1")], T0),
    )
    await held.release()
    first, bug, violation, last = await _results(tasks)
    assert first is None and last is None
    assert isinstance(bug, ValueError)
    assert isinstance(violation, StoreError) and "UNIQUE" in str(violation)
    assert held.groups == [4]
    assert await store.seen_uidls("a") == {"u1"}
    assert await store.seen_uidls("b") == {"u1"}
    # What the failed bodies wrote before failing was rolled back with them.
    assert not (await store.seen_state("broken")).polled
    assert not (await store.seen_state("twice")).polled


def _rolling_back(store: SQLiteStore) -> Awaitable[None]:
    """A write that fails the way SQLITE_FULL can: SQLite ends the whole transaction."""

    def end(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")
        raise sqlite3.OperationalError("database or disk is full")

    def body() -> sqlmod.Tx[None]:
        yield sqlmod.Native(end)

    return store._transact(body(), "atomic")


async def test_when_sqlite_rolls_the_group_back_the_bodies_before_fail_too(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Held(store, monkeypatch)
    tasks = await held.queue(
        store.record([make_message("a", "u1")], T0),
        store.mark_polled("a", [], T0),
        _rolling_back(store),
        store.record([make_message("b", "u1")], T0),
        store.mark_polled("b", [], T0),
    )
    await held.release()
    results = await _results(tasks)
    # Nobody is told "done" for a write that was rolled back.
    assert [type(r) for r in results[:3]] == [StoreError] * 3
    assert all("full" in str(r) for r in results[:3])
    assert results[3:] == [None, None]
    assert await store.seen_uidls("a") == set()
    assert not (await store.seen_state("a")).polled
    assert await store.seen_uidls("b") == {"u1"}
    assert (await store.seen_state("b")).polled


async def test_a_failed_commit_fails_every_caller_of_the_group(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deferred foreign key is checked at COMMIT: a custody row of an outbox row that is not
    # there breaks it only then, for the whole group.
    def orphan() -> sqlmod.Tx[None]:
        yield sqlmod.Execute("PRAGMA defer_foreign_keys = ON")
        yield sqlmod.Execute(
            "INSERT INTO bodies (id, payload, raw) VALUES (?, ?, ?)", (987654321, b"", None)
        )

    held = Held(store, monkeypatch)
    tasks = await held.queue(
        store.record([make_message("a", "u1")], T0),
        store._transact(orphan(), "atomic"),
    )
    await held.release()
    results = await _results(tasks)
    assert [type(r) for r in results] == [StoreError, StoreError]
    assert "FOREIGN KEY" in str(results[0])
    assert await store.seen_uidls("a") == set()
    # The store carries on.
    await store.record([make_message("a", "u1")], T0)
    assert await store.seen_uidls("a") == {"u1"}


async def test_a_caller_that_stopped_waiting_has_its_write_skipped(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Held(store, monkeypatch)
    kept, dropped = await held.queue(
        store.record([make_message("a", "u1")], T0),
        store.record([make_message("b", "u1")], T0),
    )
    dropped.cancel()
    await held.release()
    assert await kept is None
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert await store.seen_uidls("a") == {"u1"}
    assert await store.seen_uidls("b") == set()


async def test_writes_queued_before_close_are_committed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_store(url)
    assert isinstance(store, SQLiteStore)
    await store.migrate()
    gate = threading.Event()
    blocker = asyncio.ensure_future(store._run(lambda _conn: gate.wait(10)))
    writes = [asyncio.ensure_future(store.record([make_message("a", f"u{i}")], T0)) for i in (1, 2)]
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(store.close())
    await asyncio.sleep(0)
    gate.set()
    await blocker
    await closing
    assert await asyncio.gather(*writes) == [None, None]
    with pytest.raises(StoreError, match="closed"):
        await store.record([make_message("a", "u3")], T0)
    again = open_store(url)
    try:
        assert await again.seen_uidls("a") == {"u1", "u2"}
    finally:
        await again.close()


async def test_many_writers_at_once_lose_nothing(store: SQLiteStore) -> None:
    """Without a held thread: groups form as they happen; every write lands exactly once."""
    await asyncio.gather(
        *(store.record([make_message(f"a{i % 7}", f"u{i}")], T0) for i in range(300)),
        *(store.mark_polled(f"a{i}", [], T0) for i in range(7)),
    )
    seen: set[str] = set()
    for i in range(7):
        uidls = await store.seen_uidls(f"a{i}")
        assert not uidls & seen
        seen |= uidls
        assert (await store.seen_state(f"a{i}")).polled
    assert seen == {f"u{i}" for i in range(300)}
    assert await store.pending_count() == 300


def _temp_store() -> sqlmod.Tx[int]:
    """What the transaction runs with: 2 = MEMORY, 0 = the build's default (a file)."""
    rows = yield sqlmod.Fetch("PRAGMA temp_store")
    return int(rows[0][0])


async def test_only_a_bounded_body_alone_keeps_its_statement_journal_in_memory(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sqlite.py, "Statement journal": a large delete or a group's savepoints would hold every
    # page they change in RAM, so only a lone `@bounded` body (record) runs with MEMORY.
    assert await store._transact(_temp_store(), "bounded") == 2
    assert await store._transact(_temp_store(), "atomic") == 0
    assert await store._transact(_temp_store(), "write") == 0
    assert await store._transact(_temp_store(), "bounded") == 2
    held = Held(store, monkeypatch)
    tasks = await held.queue(
        store._transact(_temp_store(), "bounded"), store._transact(_temp_store(), "bounded")
    )
    await held.release()
    # The answers first: `release` returns when the blocker does, and the group may still be
    # on its way to the database thread then.
    assert await _results(tasks) == [0, 0]  # savepoints around each body: on disk
    assert held.groups == [2]
    # record itself is bounded (the setting stays as its group left it), and still records.
    after: list[int] = []
    run_group = SQLiteStore._run_group

    def spying(s: SQLiteStore, group: list[Any]) -> Any:
        outcomes = run_group(s, group)
        after.append(s._ensure_open().execute("PRAGMA temp_store").fetchone()[0])
        return outcomes

    monkeypatch.setattr(SQLiteStore, "_run_group", spying)
    await store.record([make_message("a", "u1")], T0)
    await store.forget_missing("a", ["u1"])
    assert after == [2, 0]
    assert await store.seen_uidls("a") == {"u1"}

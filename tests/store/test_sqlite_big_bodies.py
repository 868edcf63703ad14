"""Which path a body takes into SQLite, at the boundary.

Bodies of `STREAM_BLOB_BYTES` (1 MiB) and more are written through SQLite's incremental blob I/O
instead of bound parameters, because binding a 50 MB message briefly costs three times its size
(bridge/store/sqlite.py). Only the big-message benchmark would notice if big bodies silently went
back to being bound, so these tests pin the choice at the threshold, and check that both paths
store exactly the bytes given (the streamed row starts as zeroblob placeholders, so the bodies
here contain no zero bytes: a write that never happened reads back as zeros and fails).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from bridge.store import NewMessage, open_store
from bridge.store import sqlite as sqlite_store

from .helpers import make_message

T0 = 1_700_000_000.0
LIMIT = sqlite_store.STREAM_BLOB_BYTES


def _pattern(n: int) -> bytes:
    """n bytes without a zero byte, not periodic at a power of two."""
    return (bytes(range(1, 252)) * (n // 251 + 1))[:n]


def _sized(uidl: str, total: int) -> NewMessage:
    """A message whose payload and raw bytes together are `total` long."""
    payload_len = len(make_message("a", uidl).payload)
    return make_message("a", uidl, raw=_pattern(total - payload_len))


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """UIDLs of the messages whose bodies went through the streamed insert."""
    seen: list[str] = []
    real = sqlite_store._insert_streamed

    def spy(conn: sqlite3.Connection, row_id: int, message: NewMessage) -> None:
        seen.append(message.uidl)
        real(conn, row_id, message)

    monkeypatch.setattr(sqlite_store, "_insert_streamed", spy)
    return seen


async def test_bodies_from_one_mib_are_streamed_and_read_back_exactly(
    tmp_path: Path, streamed: list[str]
) -> None:
    below = _sized("below", LIMIT - 1)
    at = _sized("at", LIMIT)
    big_payload = dataclasses.replace(
        make_message("a", "payload-only", raw=None), payload=b"{" + _pattern(LIMIT) + b"}"
    )
    small = make_message("a", "small")
    store = open_store(f"sqlite://{tmp_path / 'state.db'}")
    try:
        await store.migrate()
        await store.record([below, at, big_payload, small], T0)
        assert sorted(streamed) == ["at", "payload-only"]
        for m in (below, at, big_payload, small):
            assert await store.raw_message(m.msg_id) == m.raw, m.uidl
        items = {i.uidl: i for i in await store.claim_due(T0 + 1, 10, "t", 30)}
        assert {u: items[u].payload for u in items} == {
            m.uidl: m.payload for m in (below, at, big_payload, small)
        }
    finally:
        await store.close()


async def test_a_streamed_body_recorded_twice_keeps_one_row(
    tmp_path: Path, streamed: list[str]
) -> None:
    """A crash-restart fetches the same message again: still one outbox row, the first bytes."""
    m = make_message("a", "big", raw=_pattern(LIMIT))
    store = open_store(f"sqlite://{tmp_path / 'state.db'}")
    try:
        await store.migrate()
        await store.record([m], T0)
        await store.record([m], T0 + 1)
        assert streamed == ["big"]
        assert await store.raw_message(m.msg_id) == m.raw
        assert [i.uidl for i in await store.claim_due(T0 + 2, 10, "t", 30)] == ["big"]
    finally:
        await store.close()

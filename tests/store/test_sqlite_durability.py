"""SQLite under abuse: SIGKILL mid-write loses no committed row; a full disk is `StoreFull`."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.store import StoreFull, open_store
from bridge.store.sqlite import SQLiteStore
from tests.support import require_service

from .helpers import make_message

T0 = 1_700_000_000.0

# The child records batches forever and prints a batch's UIDLs only after `record` returned,
# i.e. after COMMIT. It also delivers half of what it recorded, so the kill can land in any
# kind of write.
CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from bridge.store import NewMessage, open_store

    async def main(url, start):
        store = open_store(url)
        await store.migrate()
        n = start
        while True:
            batch = []
            for _ in range(25):
                uidl = f"u{n:07d}"
                batch.append(NewMessage("acct", uidl, "msg_" + uidl, "hook", 2000, "fp" + uidl,
                                        b"{}", b"x" * 2000, False))
                n += 1
            await store.record(batch, 1.0)
            print("committed", " ".join(m.uidl for m in batch), flush=True)
            for item in await store.claim_due(2.0, 12, "child", 30):
                await store.mark_delivered(item.id, 200, 2.0)
                print("delivered", item.uidl, flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


def _run_child_and_kill(url: str, start: int, lines_before_kill: int) -> tuple[set[str], set[str]]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    committed: set[str] = set()
    delivered: set[str] = set()
    assert proc.stdout is not None
    try:
        for _ in range(lines_before_kill):
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"child died early: {proc.stderr.read() if proc.stderr else ''}")
            kind, *uidls = line.split()
            (committed if kind == "committed" else delivered).update(uidls)
        os.kill(proc.pid, signal.SIGKILL)
        # Lines printed between our last read and the kill were committed too.
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for line in rest.splitlines():
        kind, *uidls = line.split()
        (committed if kind == "committed" else delivered).update(uidls)
    assert proc.returncode == -signal.SIGKILL
    return committed, delivered


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


async def test_sigkill_loses_no_committed_row(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    url = f"sqlite://{db}"
    rng = random.Random(4)
    all_committed: set[str] = set()
    all_delivered: set[str] = set()
    start = 0
    for _ in range(4):
        committed, delivered = await asyncio.to_thread(
            _run_child_and_kill, url, start, rng.randint(5, 60)
        )
        all_committed |= committed
        all_delivered |= delivered
        start += 1_000_000  # fresh UIDLs each round; the killed round's tail stays uncommitted
        assert _integrity(db) == "ok"

    store = open_store(url)
    try:
        await store.migrate()
        seen = await store.seen_uidls("acct")
        assert all_committed <= seen, f"lost {len(all_committed - seen)} committed UIDLs"
        # Every recorded message is either still pending or was delivered; none vanished.
        pending = {i.uidl for i in await store.claim_due(10.0, 1_000_000, "check", 30)}
        assert all_delivered.isdisjoint(pending)
        assert all_delivered <= seen
        assert len(seen) - len(pending) >= len(all_delivered)
        for uidl in list(all_committed)[:20]:
            assert await store.raw_message("msg_" + uidl) == b"x" * 2000
    finally:
        await store.close()


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    require_service(
        "tmpfs mount (root)", result.returncode == 0, result.stderr.strip() or "mount failed"
    )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_full_disk_raises_store_full_and_keeps_db_usable(tiny_tmpfs: Path) -> None:
    db = tiny_tmpfs / "state.db"
    store = open_store(f"sqlite://{db}")
    await store.migrate()
    recorded: set[str] = set()
    failed_batch: list[str] = []
    try:
        for b in range(200):
            batch = [make_message("a", f"b{b}-{i}", raw=os.urandom(4000)) for i in range(10)]
            try:
                await store.record(batch, T0)
            except StoreFull as exc:
                assert "full" in str(exc)
                failed_batch = [m.uidl for m in batch]
                break
            recorded.update(m.uidl for m in batch)
        else:
            pytest.fail("a 1 MiB filesystem never filled up")
        assert recorded, "the very first batch already failed; the test proves nothing"
        # Nothing of the failed batch is there, everything before it is, reads still work.
        assert await store.seen_uidls("a") == recorded
        assert await store.pending_count() == len(recorded)
        # Free space (grow the filesystem) and the same store carries on.
        subprocess.run(
            ["mount", "-o", "remount,size=16m", str(tiny_tmpfs)], check=True, capture_output=True
        )
        await store.record([make_message("a", u) for u in failed_batch], T0 + 1)
        assert await store.seen_uidls("a") == recorded | set(failed_batch)
    finally:
        await store.close()
    assert _integrity(db) == "ok"


@pytest.mark.parametrize("raw_size", [200_000, 3_000_000], ids=["bound", "streamed-blob"])
async def test_size_limit_is_store_full(tmp_path: Path, raw_size: int) -> None:
    """SQLite's own SQLITE_FULL path (page limit reached), independent of mount privileges;
    both for a body bound as a parameter and for one written through incremental blob I/O."""
    db = tmp_path / f"{uuid.uuid4().hex}.db"
    store = open_store(f"sqlite://{db}")
    assert isinstance(store, SQLiteStore)
    await store.migrate()
    await store.record([make_message("a", "first")], T0)
    pages = await store._run(lambda c: int(c.execute("PRAGMA page_count").fetchone()[0]))
    await store._run(lambda c: c.execute(f"PRAGMA max_page_count = {pages + 3}"))
    try:
        with pytest.raises(StoreFull, match="full"):
            await store.record([make_message("a", "big", raw=os.urandom(raw_size))], T0)
        assert await store.seen_uidls("a") == {"first"}
        assert await store.raw_message(make_message("a", "big").msg_id) is None
    finally:
        await store.close()
    assert _integrity(db) == "ok"

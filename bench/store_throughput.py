"""Store throughput: `record` in batches of 100, then `claim_due` + `mark_delivered`.

    .venv/bin/python bench/store_throughput.py [--messages 2000] [--pg DSN] [--no-pg]

Prints one line per backend and stage with rows/s. Payloads are ~2 KB and raw messages ~8 KB,
roughly a small text mail. PostgreSQL uses a throwaway schema that is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

from bridge.store import NewMessage, Store, open_store
from bridge.store.postgres import PostgresStore


def _messages(n: int) -> list[NewMessage]:
    payload = b'{"type":"message.received","data":{"text":"' + b"x" * 2000 + b'"}}'
    raw = os.urandom(8000)
    return [
        NewMessage(
            account=f"acct{i % 10}",
            uidl=f"{i:08X}",
            msg_id=f"msg_{uuid.uuid4().hex}",
            webhook="hook",
            size=len(raw),
            fingerprint=f"fp{i}",
            payload=payload,
            raw=raw,
            delete_after_delivery=False,
        )
        for i in range(n)
    ]


async def _bench(name: str, store: Store, n: int, claim_batch: int, workers: int) -> None:
    await store.migrate()
    msgs = _messages(n)
    t = time.perf_counter()
    for i in range(0, n, 100):
        await store.record(msgs[i : i + 100], 1.0)
    dt = time.perf_counter() - t
    print(f"{name:8s} record (batches of 100)       {n / dt:10.0f} rows/s  ({dt:.2f} s)")

    async def worker(k: int) -> int:
        done = 0
        while True:
            items = await store.claim_due(2.0, claim_batch, f"w{k}", 60)
            if not items:
                return done
            for item in items:
                await store.mark_delivered(item.id, 200, 2.0)
            done += len(items)

    t = time.perf_counter()
    total = sum(await asyncio.gather(*(worker(k) for k in range(workers))))
    dt = time.perf_counter() - t
    assert total == n, (total, n)
    print(
        f"{name:8s} claim_due({claim_batch})+mark_delivered x{workers} workers "
        f"{n / dt:8.0f} rows/s  ({dt:.2f} s)"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--claim-batch", type=int, default=50)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--no-pg", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite://{Path(tmp) / 'bench.db'}")
        try:
            await _bench("sqlite", store, args.messages, args.claim_batch, args.workers)
        finally:
            await store.close()

    if not args.no_pg:
        url = f"{args.pg}?schema=bench_{uuid.uuid4().hex[:8]}"
        pg = open_store(url)
        assert isinstance(pg, PostgresStore)
        try:
            await _bench("postgres", pg, args.messages, args.claim_batch, args.workers)
        finally:
            await pg.drop_schema()
            await pg.close()


if __name__ == "__main__":
    asyncio.run(main())

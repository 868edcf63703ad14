"""Store throughput: `record` in batches of 100, then `claim_due` + `mark_delivered`.

    .venv/bin/python bench/store_throughput.py [--messages 2000] [--pg DSN] [--no-pg]
        [--processes 1,2,4] [--leases 50000] [--idle-polls 5000]

Prints one line per backend and stage with rows/s. Payloads are ~2 KB and raw messages ~8 KB,
roughly a small text mail. PostgreSQL uses a throwaway schema that is dropped at the end.

`--processes` repeats the PostgreSQL stages with that many OS processes at once (each its own
pool, like replicas), recording and then claiming from one shared outbox, so the figure shows
how `FOR UPDATE SKIP LOCKED` claims scale rather than one client's speed. `--leases N` times
one replica's lease heartbeat (heartbeat, live replicas, read all N lease rows, renew its
share) with N accounts leased over 100 replicas. `--idle-polls N` times the store side of N
polls that find nothing new (read the seen set, prune it), the floor cost of every poll.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
import uuid
from pathlib import Path

from bridge.store import NewMessage, Store, open_store
from bridge.store.postgres import PostgresStore


def _messages(n: int, offset: int = 0) -> list[NewMessage]:
    payload = b'{"type":"message.received","data":{"text":"' + b"x" * 2000 + b'"}}'
    raw = os.urandom(8000)
    return [
        NewMessage(
            account=f"acct{i % 10}",
            uidl=f"{i + offset:08X}",
            msg_id=f"msg_{uuid.uuid4().hex}",
            webhook="hook",
            size=len(raw),
            fingerprint=f"fp{i + offset}",
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


def _proc_stage(url: str, stage: str, n: int, offset: int, claim_batch: int, workers: int) -> int:
    """One replica-like process: record `n` messages, or claim+deliver until none are due."""

    async def run() -> int:
        store = open_store(url)
        try:
            if stage == "record":
                msgs = _messages(n, offset)
                for i in range(0, n, 100):
                    await store.record(msgs[i : i + 100], 1.0)
                return n

            async def worker(k: int) -> int:
                done = 0
                while True:
                    items = await store.claim_due(2.0, claim_batch, f"p{offset}w{k}", 60)
                    if not items:
                        return done
                    for item in items:
                        await store.mark_delivered(item.id, 200, 2.0)
                    done += len(items)

            return sum(await asyncio.gather(*(worker(k) for k in range(workers))))
        finally:
            await store.close()

    return asyncio.run(run())


async def _bench_processes(dsn: str, procs: int, n: int, claim_batch: int, workers: int) -> None:
    url = f"{dsn}?schema=bench_{uuid.uuid4().hex[:8]}"
    pg = open_store(url)
    assert isinstance(pg, PostgresStore)
    await pg.migrate()
    ctx = multiprocessing.get_context("spawn")
    try:
        per = n // procs
        with ctx.Pool(procs) as pool:
            t = time.perf_counter()
            args = [(url, "record", per, k * per, claim_batch, workers) for k in range(procs)]
            recorded = sum(pool.starmap(_proc_stage, args))
            dt_rec = time.perf_counter() - t
            t = time.perf_counter()
            args = [(url, "claim", 0, k, claim_batch, workers) for k in range(procs)]
            claimed = sum(pool.starmap(_proc_stage, args))
            dt_claim = time.perf_counter() - t
        assert claimed == recorded, (claimed, recorded)
        print(
            f"postgres x{procs} processes: record {recorded / dt_rec:8.0f} rows/s, "
            f"claim_due({claim_batch})+mark_delivered x{workers} workers each "
            f"{claimed / dt_claim:8.0f} rows/s  ({recorded} rows)"
        )
    finally:
        await pg.drop_schema()
        await pg.close()


async def _bench_leases(dsn: str, accounts: int, replicas: int = 100) -> None:
    url = f"{dsn}?schema=bench_{uuid.uuid4().hex[:8]}"
    pg = open_store(url)
    assert isinstance(pg, PostgresStore)
    await pg.migrate()
    try:
        names = [f"acct{i:06d}" for i in range(accounts)]
        share = -(-accounts // replicas)
        for r in range(replicas):
            await pg.heartbeat(f"r{r}", 1.0, 30)
            await pg.acquire_leases(f"r{r}", names[r * share : (r + 1) * share], 30, 1.0, None)
        rounds = 20
        t = time.perf_counter()
        for k in range(rounds):
            now = 2.0 + k
            await pg.heartbeat("r0", now, 30)
            await pg.live_replicas(now)
            holders = await pg.lease_holders(now)
            mine = [a for a, h in holders.items() if h == "r0"]
            await pg.acquire_leases("r0", mine, 30, now, share)
        dt = (time.perf_counter() - t) / rounds
        print(
            f"postgres lease heartbeat, {accounts} leases over {replicas} replicas: "
            f"{dt * 1000:.1f} ms per replica per heartbeat ({len(holders)} rows read)"
        )
    finally:
        await pg.drop_schema()
        await pg.close()


async def _bench_idle_polls(dsn: str, polls: int, tasks: int = 8) -> None:
    """A poll that finds nothing new still reads the seen set (`seen_state`) and prunes it."""
    url = f"{dsn}?schema=bench_{uuid.uuid4().hex[:8]}"
    pg = open_store(url)
    assert isinstance(pg, PostgresStore)
    await pg.migrate()
    try:
        accounts = [f"acct{i:03d}" for i in range(100)]
        for a in accounts:
            await pg.mark_seen(a, [(f"U{i:04d}", f"fp{i}") for i in range(50)], 1.0)
        present = [f"U{i:04d}" for i in range(50)]
        queue = [accounts[i % len(accounts)] for i in range(polls)]

        async def poller() -> None:
            while queue:
                account = queue.pop()
                await pg.seen_state(account)
                await pg.forget_missing(account, present)

        t = time.perf_counter()
        await asyncio.gather(*(poller() for _ in range(tasks)))
        dt = time.perf_counter() - t
        print(
            f"postgres idle poll (seen_state + forget_missing, 50 UIDLs) x{tasks} tasks "
            f"{polls / dt:8.0f} polls/s"
        )
    finally:
        await pg.drop_schema()
        await pg.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--claim-batch", type=int, default=50)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--processes", default="", help="comma-separated process counts, e.g. 1,2,4")
    ap.add_argument("--leases", type=int, default=0, help="accounts for the lease heartbeat stage")
    ap.add_argument("--idle-polls", type=int, default=0, help="store side of N empty polls")
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
        for procs in (int(p) for p in args.processes.split(",") if p):
            await _bench_processes(args.pg, procs, args.messages, args.claim_batch, args.workers)
        if args.leases:
            await _bench_leases(args.pg, args.leases)
        if args.idle_polls:
            await _bench_idle_polls(args.pg, args.idle_polls)


if __name__ == "__main__":
    asyncio.run(main())

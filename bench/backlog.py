"""Backlog drain: the webhook was down, N messages wait in the outbox; how fast do they go out?

    python bench/backlog.py [--messages 6000] [--rounds 3] [--workers 0,1] [--quick]

This is the delivery stage alone, the part of the poller that parses MIME into webhook bodies,
signs them and POSTs them, after an outage, when it has more work than one core can do. Each
round fills a fresh SQLite outbox with N recorded-but-undelivered ~5 KB messages (the rows the
poller writes while the receiver is down) and runs ``pop3bridge once`` on it against an empty
Dovecot mailbox, with ``poller.parse_workers`` set to each value in turn (alternated). The
receiver verifies every signature with the `standardwebhooks` library; a round counts only if
all N arrived verified.

Reported: messages/s over the whole process (exec to exit) and over the drain itself (first to
last POST, which leaves out start-up), and the CPU of the main process per message (worker
processes are not waited for by it, so their CPU is not in that figure).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import (
    Contender,
    Sample,
    alternate,
    machine,
    poller_config,
    print_table,
    private_dovecot,
    run_once,
    summarize,
    write_results,
)

from bridge.outbox import outbox_row
from bridge.store import open_store
from bridge.testing.samples import generate_messages
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.receiver import ThreadedReceiver

ACCOUNT = "bench"


class Backlog:
    def __init__(self, server: DovecotServer, user: DovecotUser, n: int, work: Path) -> None:
        self.server, self.user, self.n, self.work = server, user, n, work
        self.messages = list(generate_messages(n, seed=7, size=5000))
        self.receiver = ThreadedReceiver(default_status=200)
        self.receiver.start()

    async def _fill(self, db: Path) -> None:
        store = open_store(f"sqlite:///{db}")
        await store.migrate()
        now = time.time()
        rows = [
            outbox_row(
                raw,
                account=ACCOUNT,
                uidl=f"backlog-{i}",
                size=len(raw),
                webhook="main",
                now=now,
                attachment_inline_limit=1 << 20,
                include_raw=False,
                defer=True,
            )
            for i, raw in enumerate(self.messages)
        ]
        for at in range(0, len(rows), 500):
            await store.record(rows[at : at + 500], now)
        await store.close()

    def drain(self, workers: int) -> Sample:
        run = Path(tempfile.mkdtemp(dir=self.work))
        db = run / "state.db"
        asyncio.run(self._fill(db))
        path = poller_config(
            run / "state.yaml",
            db,
            self.receiver,
            [self.server.plain_account(self.user, ACCOUNT)],
            poller={"parse_workers": workers},
        )
        done = run_once(path, self.receiver, self.n)
        shutil.rmtree(run)
        drain = done.last_post_at - done.first_post_at
        return Sample(done.seconds, self.n, {"drain_s": drain, "drain_rate": (self.n - 1) / drain})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=6000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", default="0,1", help="parse_workers values, comma-separated")
    ap.add_argument("--quick", action="store_true", help="smoke run: 200 messages, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.messages, args.rounds = 200, 1
    work = Path(tempfile.mkdtemp(prefix="pop3bridge-bench-backlog-"))
    before = machine()
    with private_dovecot() as server:
        user = server.add_user()
        bench = Backlog(server, user, args.messages, work)
        contenders = [
            Contender(f"parse_workers: {w}", functools.partial(bench.drain, w))
            for w in (int(x) for x in args.workers.split(","))
        ]
        samples = alternate(contenders, args.rounds)
    after = machine()
    shutil.rmtree(work, ignore_errors=True)
    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    for name, runs in samples.items():
        summary = summarize(runs)
        drain_rates = [s.extra["drain_rate"] for s in runs]
        summary["median_drain_rate"] = statistics.median(drain_rates)
        results[name] = summary
        rows.append(
            [
                name,
                f"{summary['median_rate']:,.0f}",
                f"{summary['median_drain_rate']:,.0f}",
                f"{min(drain_rates):,.0f} - {max(drain_rates):,.0f}",
                f"{summary['median_cpu_ms_per_item']:.3f}",
            ]
        )
    print_table(
        f"Backlog of {args.messages} messages drained by pop3bridge once (medians of rounds)",
        ["contender", "msg/s exec->exit", "msg/s drain", "drain min - max", "main CPU ms/msg"],
        rows,
    )
    print(f"machine: load average before {before['loadavg']}, after {after['loadavg']}")
    path = write_results(
        "backlog",
        {
            "messages": args.messages,
            "rounds": args.rounds,
            "machine": before,
            "after": after,
            "results": results,
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Backlog drain: the webhook was down, N messages wait; how fast does `pop3bridge run` deliver?

    python bench/backlog.py [--messages 6000] [--rounds 3] [--workers 0,1] [--receiver nginx]
                            [--quick]

Issue 17's target: `pop3bridge run` draining a 6,000-message backlog at >= 1.2x fetchmail's
rate, on the nginx receiver (bench/_webhook_nginx.py: answers 204, keeps every request, the
signatures verified with the `standardwebhooks` library after the timed part). Contenders,
alternated every round:

- ``run, outbox backlog, parse_workers W`` for each W of --workers: a fresh SQLite outbox holds
  N recorded-but-undelivered ~5 KB messages (the rows the poller writes while the receiver is
  down) and ``pop3bridge run`` (the daemon) delivers them; the mailbox is empty.
- ``run, mailbox backlog``: the N messages wait in the POP3 mailbox instead (the bridge was
  down), fresh state, default configuration: fetch, record, parse, sign, POST.
- ``fetchmail -> BSMTP``: fetchmail moving the same N messages out of a mailbox
  (``--all --keep``, no TLS), counted from the BSMTP file, as in bench/poller_throughput.py.

A bridge round counts only if all N arrived verified. Its rate is N over exec to the last POST
(the daemon is then stopped with SIGTERM; its shutdown is not in the rate); also reported: the
drain alone (first to last POST, without start-up) and the CPU of the whole process tree per
message, parse workers included (bench/_tree.py).
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
    fill_mailbox,
    machine,
    poller_config,
    print_table,
    private_dovecot,
    run_until,
    summarize,
    write_results,
)
from _webhook_nginx import NginxReceiver
from poller_throughput import fetchmail_run

from bridge.outbox import outbox_row
from bridge.store import open_store
from bridge.testing.samples import generate_messages
from tests.support.dovecot import DovecotServer
from tests.support.receiver import ThreadedReceiver

ACCOUNT = "bench"
FETCHMAIL = "fetchmail -> BSMTP"


class Backlog:
    def __init__(self, server: DovecotServer, n: int, work: Path, receiver: Any) -> None:
        self.server, self.n, self.work, self.receiver = server, n, work, receiver
        self.messages = list(generate_messages(n, seed=7, size=5000))
        self.empty = server.add_user()
        self.full = fill_mailbox(server, self.messages)

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

    def drain(
        self, workers: int | None, *, mailbox: bool = False, tree: Path | None = None
    ) -> Sample:
        """`pop3bridge run` until all N arrived; the backlog in the outbox, or in the mailbox."""
        run = Path(tempfile.mkdtemp(dir=self.work))
        db = run / "state.db"
        if not mailbox:
            asyncio.run(self._fill(db))
        path = poller_config(
            run / "state.yaml",
            db,
            self.receiver,
            [self.server.plain_account(self.full if mailbox else self.empty, ACCOUNT)],
            poller=None if workers is None else {"parse_workers": workers},
        )
        done = run_until(path, self.receiver, self.n, tree=tree)
        shutil.rmtree(run)
        drain = done.last_post_at - done.first_post_at
        return Sample(
            done.seconds,
            self.n,
            {"drain_s": drain, "drain_rate": (self.n - 1) / drain, "cpu_s": done.cpu_s},
        )

    def fetchmail(self) -> Sample:
        run = Path(tempfile.mkdtemp(dir=self.work))
        seconds = fetchmail_run(self.server, self.full, self.n, run)
        shutil.rmtree(run)
        return Sample(seconds, self.n, {"drain_rate": self.n / seconds})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, help="default 6000 (200 with --quick)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", default="0,1", help="parse_workers values, comma-separated")
    ap.add_argument("--receiver", choices=("nginx", "python"), default="nginx")
    ap.add_argument(
        "--baseline",
        type=Path,
        help="another tree's bridge package (git archive REV bridge | tar -x -C DIR): its "
        "outbox-backlog drains (and its mailbox backlog, unless --no-mailbox) run alternated "
        "with this tree's",
    )
    ap.add_argument("--no-mailbox", action="store_true", help="leave out the mailbox backlog")
    ap.add_argument("--quick", action="store_true", help="smoke run: 200 messages, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 1
    args.messages = args.messages or (200 if args.quick else 6000)
    work = Path(tempfile.mkdtemp(prefix="pop3bridge-bench-backlog-"))
    before = machine()
    receiver: Any = (
        NginxReceiver() if args.receiver == "nginx" else ThreadedReceiver(default_status=200)
    )
    with private_dovecot() as server, receiver:
        bench = Backlog(server, args.messages, work, receiver)
        contenders = []
        for w in (int(x) for x in args.workers.split(",")):
            contenders.append(
                Contender(
                    f"run, outbox backlog, parse_workers {w}",
                    functools.partial(bench.drain, w),
                    cpu="reported",
                )
            )
            if args.baseline is not None:
                contenders.append(
                    Contender(
                        f"baseline: run, outbox backlog, parse_workers {w}",
                        functools.partial(bench.drain, w, tree=args.baseline.resolve()),
                        cpu="reported",
                    )
                )
        if not args.no_mailbox:
            contenders.append(
                Contender(
                    "run, mailbox backlog (defaults)",
                    functools.partial(bench.drain, None, mailbox=True),
                    cpu="reported",
                )
            )
            if args.baseline is not None:
                contenders.append(
                    Contender(
                        "baseline: run, mailbox backlog (defaults)",
                        functools.partial(
                            bench.drain, None, mailbox=True, tree=args.baseline.resolve()
                        ),
                        cpu="reported",
                    )
                )
        contenders.append(Contender(FETCHMAIL, bench.fetchmail))
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
        f"Backlog of {args.messages} messages, {args.receiver} receiver (medians of rounds)",
        ["contender", "msg/s exec->last POST", "msg/s drain", "drain min - max", "CPU ms/msg"],
        rows,
    )
    theirs = results[FETCHMAIL]["median_rate"]
    targets = []
    for name, r in results.items():
        if name != FETCHMAIL:
            ratio = r["median_rate"] / theirs
            targets.append({"contender": name, "ratio": ratio, "goal": 1.2, "met": ratio >= 1.2})
            print(f"  {name} / fetchmail: {ratio:.2f} (target >= 1.2)")
    print(f"machine: load average before {before['loadavg']}, after {after['loadavg']}")
    path = write_results(
        "backlog",
        {
            "messages": args.messages,
            "rounds": args.rounds,
            "receiver": args.receiver,
            "targets": targets,
            "machine": before,
            "after": after,
            "results": results,
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What parsing in worker processes costs: CPU per message of the whole process tree.

    python bench/isolation_cost.py [--messages 2000] [--rounds 3] [--baseline DIR]

Issue 19 moved every parse of a message out of the event loop into the parse workers
(`poller.parse_workers`), including, with attachment links on, the parse a message over half
the inline limit gets at fetch. This runs ``pop3bridge once`` against a private Dovecot mailbox
of the bench mix (`generate_messages(n, seed=7, size=5000)`, as bench/poller_throughput.py)
into a fresh SQLite store, alternating:

- ``workers 0`` / ``workers 1``: attachment links off (bodies built at delivery);
- ``links, workers 0`` / ``links, workers 1``: links on with an inline limit of 4 KiB, so every
  message of the mix takes the links path (parsed at fetch, its big attachments stored);
- with ``--baseline DIR`` (another checkout, e.g. ``git archive`` of the commit before), the
  two ``workers 1`` contenders again on that tree.

CPU is the whole process tree's (bench/_tree.py: the bridge, its forkserver and workers), per
message; the receiver runs in this process and is not counted. Read the ratios of one run.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from _harness import (
    Contender,
    Sample,
    alternate,
    fill_mailbox,
    machine,
    poller_config,
    print_table,
    private_dovecot,
    run_once,
    summarize,
    write_results,
)

from bridge.testing.samples import generate_messages
from tests.support.dovecot import DovecotServer, DovecotUser, free_port
from tests.support.receiver import ThreadedReceiver

LINK_LIMIT = 4096


class Bench:
    def __init__(self, server: DovecotServer, user: DovecotUser, n: int, work: Path) -> None:
        self.server, self.user, self.n, self.work = server, user, n, work
        self.receiver = ThreadedReceiver(default_status=200)
        self.receiver.start()

    def once(self, workers: int, links: bool, tree: Path | None) -> Sample:
        run = Path(tempfile.mkdtemp(dir=self.work))
        webhook: dict[str, Any] = {}
        if links:
            webhook["attachment_inline_limit"] = LINK_LIMIT
        path = poller_config(
            run / "state.yaml",
            run / "state.db",
            self.receiver,
            [self.server.plain_account(self.user, "bench")],
            webhook=webhook,
            poller={"parse_workers": workers},
        )
        if links:
            cfg = yaml.safe_load(path.read_text())
            cfg["attachments"] = {
                "enabled": True,
                "port": free_port(),
                "public_url": "https://files.example.test",
                "signing_key": "b" * 40,
            }
            path.write_text(yaml.safe_dump(cfg))
        done = run_once(path, self.receiver, self.n, tree=tree)
        shutil.rmtree(run)
        return Sample(done.seconds, self.n, {"cpu_s": done.cpu_s})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", type=Path, help="another checkout to run the same way")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pop3bridge-bench-isolation-"))
    before = machine()
    with private_dovecot() as server:
        user = fill_mailbox(server, generate_messages(args.messages, seed=7, size=5000))
        bench = Bench(server, user, args.messages, work)
        contenders = [
            Contender(name, functools.partial(bench.once, w, links, None), cpu="reported")
            for name, w, links in (
                ("workers 0", 0, False),
                ("workers 1", 1, False),
                ("links, workers 0", 0, True),
                ("links, workers 1", 1, True),
            )
        ]
        if args.baseline is not None:
            contenders += [
                Contender(
                    f"baseline {name}",
                    functools.partial(bench.once, 1, links, args.baseline),
                    cpu="reported",
                )
                for name, links in (("workers 1", False), ("links, workers 1", True))
            ]
        samples = alternate(contenders, args.rounds)
    after = machine()
    shutil.rmtree(work, ignore_errors=True)
    results = {name: summarize(runs) for name, runs in samples.items()}
    print_table(
        f"pop3bridge once, {args.messages} messages of the bench mix (medians of rounds)",
        ["contender", "msg/s", "tree CPU ms/msg"],
        [
            [name, f"{r['median_rate']:,.0f}", f"{r['median_cpu_ms_per_item']:.3f}"]
            for name, r in results.items()
        ],
    )
    print(f"machine: load average before {before['loadavg']}, after {after['loadavg']}")
    write_results("isolation_cost", {"machine": before, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

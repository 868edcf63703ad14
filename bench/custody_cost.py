"""What a change costs the poller: `pop3bridge once` end to end, this tree against a baseline
tree, alternated in one run. Written for the custody trail (a baseline without its writes);
issue 17 used it for the 29 November tree against today's.

    mkdir /tmp/base && git archive <commit> bridge | tar -x -C /tmp/base
    python bench/custody_cost.py --baseline /tmp/base [--messages 2000] [--rounds 3]
        [--receiver python|nginx] [--workers 1,0]

`--baseline` may be repeated; `--workers` adds, for every tree, one contender per
`poller.parse_workers` value besides the tree's own default. CPU is the whole process tree's
(bench/_tree.py), parse workers included. Issue 17's comparison of 29 November with 2 December:

    mkdir /tmp/nov29 /tmp/dec2 && git archive ef26ce7 bridge | tar -x -C /tmp/nov29
    git archive 7c6beac bridge | tar -x -C /tmp/dec2
    python bench/custody_cost.py --baseline /tmp/nov29 --baseline /tmp/dec2 --workers 0 \
        --receiver nginx

Each round fetches N ~5 KB messages from a private Dovecot over plain POP3 into a fresh SQLite
state file and delivers them to a local receiver that verifies every signature (the same set-up
as bench/poller_throughput.py), once with each tree. Reported: messages/s, CPU ms per message
(the `pop3bridge` process), and the ratio this tree / baseline. Issue 16 allows the trail at
most 10 % of poller throughput.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
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
    run_once,
    summarize,
    write_results,
)
from _webhook_nginx import NginxReceiver

from bridge.testing.samples import generate_messages
from tests.support.receiver import ThreadedReceiver

HERE = Path(__file__).resolve().parents[1]
MINE = "this tree (its defaults)"
BASE = "baseline tree (its defaults)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--baseline",
        type=Path,
        action="append",
        required=True,
        help="a tree's bridge package to compare with (repeatable; the first is the ratios')",
    )
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--receiver", choices=("python", "nginx"), default="python")
    ap.add_argument(
        "--workers", help="parse_workers values to run every tree with too, comma-separated"
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pop3bridge-bench-custody-"))
    work.chmod(0o755)
    before = machine()
    receiver: Any = (
        NginxReceiver() if args.receiver == "nginx" else ThreadedReceiver(default_status=200)
    )
    with private_dovecot() as server, receiver:
        user = fill_mailbox(server, generate_messages(args.messages, seed=7, size=5000))
        account = server.plain_account(user, "bench")

        def once(tree: Path, workers: int | None = None) -> Sample:
            run = Path(tempfile.mkdtemp(dir=work))
            poller = None if workers is None else {"parse_workers": workers}
            cfg = poller_config(
                run / "c.yaml", run / "state.db", receiver, [account], poller=poller
            )
            done = run_once(cfg, receiver, args.messages, tree=tree)
            shutil.rmtree(run)
            return Sample(done.seconds, args.messages, {"cpu_s": done.cpu_s})

        workers = [int(x) for x in args.workers.split(",")] if args.workers else []
        trees = [(HERE, "this tree")] + [
            (b.resolve(), "baseline tree" if i == 0 else f"baseline {b.name}")
            for i, b in enumerate(args.baseline)
        ]
        contenders = []
        for tree, label in trees:
            contenders.append(
                Contender(f"{label} (its defaults)", functools.partial(once, tree), cpu="reported")
            )
            for w in workers:
                contenders.append(
                    Contender(
                        f"{label}, parse_workers {w}",
                        functools.partial(once, tree, w),
                        cpu="reported",
                    )
                )
        samples = alternate(contenders, args.rounds)
    shutil.rmtree(work, ignore_errors=True)
    results = {name: summarize(s) for name, s in samples.items()}
    mine, base = results[MINE], results[BASE]
    ratio = mine["median_rate"] / base["median_rate"] if base["median_rate"] else 0.0
    cpu = mine["median_cpu_ms_per_item"] / max(base["median_cpu_ms_per_item"], 1e-9)
    data: dict[str, Any] = {
        "benchmark": "custody_cost",
        "messages": args.messages,
        "rounds": args.rounds,
        "receiver": args.receiver,
        "baseline": [str(b) for b in args.baseline],
        "machine_before": before,
        "machine_after": machine(),
        "results": results,
        "throughput_ratio": ratio,
        "cpu_ratio": cpu,
    }
    print_table(
        "pop3bridge once, end to end",
        ("contender", "msg/s (median)", "spread %", "CPU ms/msg (median)"),
        [
            (name, r["median_rate"], r["spread_pct"], r["median_cpu_ms_per_item"])
            for name, r in results.items()
        ],
    )
    print(f"\nthroughput this tree / baseline: {ratio:.3f} (custody target >= 0.90)")
    print(f"CPU per message this tree / baseline: {cpu:.3f}")
    print(f"results: {write_results('custody_cost', data)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What a `pop3bridge once` that finds no new mail costs: the CPU of its whole process tree.

    python bench/empty_once.py [--rounds 5] [--workers 1,0] [--baseline DIR ...]
                               [--loop default|asyncio|uvloop ...]

Cron runs `once` every few minutes, and most runs find nothing new, so this fixed cost is
most of what the bridge spends on an idle mailbox. Each run polls one account on the private
Dovecot whose mailbox holds `--seen` messages that the state file (a copy per run) has already
recorded as seen: login, STAT, UIDL, nothing to fetch, QUIT, exit. CPU is the whole process
tree's (bench/_tree.py: the bridge, and the parse workers' forkserver, resource tracker and
workers when it starts them); the exit status must be 0. Trees (this one, and each
`--baseline DIR`, e.g. `git archive COMMIT bridge | tar -x -C DIR`, run with `python -P`)
alternate within a round, each with every `--workers` value and on every `--loop` (default:
the tree's own for `once`; `asyncio`, `uvloop`: POP3BRIDGE_EVENT_LOOP). Read the ratios of one
run.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from _harness import (
    Contender,
    Sample,
    _bridge_command,
    _wrapped,
    alternate,
    fill_mailbox,
    machine,
    poller_config,
    print_table,
    private_dovecot,
    run_once,
    write_results,
)

from bridge.testing.samples import generate_messages
from tests.support.receiver import ThreadedReceiver

HERE = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seen", type=int, default=50, help="messages in the mailbox, all seen")
    ap.add_argument("--workers", default="1,0", help="parse_workers values, comma-separated")
    ap.add_argument("--baseline", type=Path, action="append", default=[])
    ap.add_argument(
        "--loop",
        action="append",
        choices=("default", "asyncio", "uvloop"),
        help="event loop, repeatable (default: each tree's own default for `once`)",
    )
    args = ap.parse_args()
    loops = list(dict.fromkeys(args.loop or ["default"]))
    work = Path(tempfile.mkdtemp(prefix="pop3bridge-bench-empty-"))
    before = machine()
    receiver = ThreadedReceiver(default_status=204)
    receiver.start()
    try:
        with private_dovecot() as server:
            user = fill_mailbox(server, generate_messages(args.seen, seed=7, size=5000))
            account = server.plain_account(user, "bench")
            # One real run records every message as seen; each timed run gets a copy.
            template = work / "seen.db"
            cfg = poller_config(work / "first.yaml", template, receiver, [account])
            run_once(cfg, receiver, args.seen)

            def once(tree: Path, workers: int, loop_name: str) -> Sample:
                run = Path(tempfile.mkdtemp(dir=work))
                shutil.copyfile(template, run / "state.db")
                path = poller_config(
                    run / "c.yaml",
                    run / "state.db",
                    receiver,
                    [account],
                    poller={"parse_workers": workers},
                )
                loop = None if loop_name == "default" else loop_name
                argv, env = _bridge_command(path, "once", loop, None if tree == HERE else tree)
                report = path.with_suffix(".tree.json")
                proc = subprocess.run(
                    _wrapped(argv, report), capture_output=True, env=env, check=False
                )
                out = json.loads(proc.stdout or b"{}")
                if proc.returncode != 0 or out.get("accounts", {}).get("bench", {}).get("new"):
                    raise SystemExit(f"once failed: {proc.returncode}\n{proc.stderr.decode()}")
                done = json.loads(report.read_text())
                shutil.rmtree(run)
                return Sample(done["seconds"], 1, {"cpu_s": done["cpu_s"]})

            trees = [(HERE, "this tree")] + [
                (b.resolve(), f"baseline {b.name}") for b in args.baseline
            ]
            contenders = [
                Contender(
                    f"{label}, parse_workers {w}" + ("" if loop == "default" else f", {loop}"),
                    functools.partial(once, tree, w, loop),
                    cpu="reported",
                )
                for tree, label in trees
                for w in (int(x) for x in args.workers.split(","))
                for loop in loops
            ]
            samples = alternate(contenders, args.rounds)
    finally:
        receiver.close()
        shutil.rmtree(work, ignore_errors=True)
    results: dict[str, Any] = {
        name: {
            "cpu_ms": [1000 * s.extra["cpu_s"] for s in runs],
            "median_cpu_ms": statistics.median(1000 * s.extra["cpu_s"] for s in runs),
            "median_seconds": statistics.median(s.seconds for s in runs),
        }
        for name, runs in samples.items()
    }
    after = machine()
    print_table(
        f"pop3bridge once, nothing new ({args.seen} seen messages), medians of {args.rounds}",
        ["contender", "tree CPU ms", "min - max", "wall s"],
        [
            [
                name,
                f"{r['median_cpu_ms']:.0f}",
                f"{min(r['cpu_ms']):.0f} - {max(r['cpu_ms']):.0f}",
                f"{r['median_seconds']:.3f}",
            ]
            for name, r in results.items()
        ],
    )
    print(f"machine: load average before {before['loadavg']}, after {after['loadavg']}")
    write_results("empty_once", {"machine": before, "machine_after": after, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

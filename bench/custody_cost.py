"""What the custody trail costs the poller: `pop3bridge once` end to end, this tree against a
baseline tree (a checkout without custody writes), alternated in one run.

    git worktree add /tmp/pre-custody <commit before the custody trail>
    python bench/custody_cost.py --baseline /tmp/pre-custody [--messages 2000] [--rounds 3]

Each round fetches N ~5 KB messages from a private Dovecot over plain POP3 into a fresh SQLite
state file and delivers them to a local receiver that verifies every signature (the same set-up
as bench/poller_throughput.py), once with each tree. Reported: messages/s, CPU ms per message
(the `pop3bridge` process), and the ratio this tree / baseline. Issue 16 allows the trail at
most 10 % of poller throughput.
"""

from __future__ import annotations

import argparse
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

from bridge.testing.samples import generate_messages
from tests.support.receiver import ThreadedReceiver

HERE = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", type=Path, required=True, help="checkout without custody")
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pop3bridge-bench-custody-"))
    work.chmod(0o755)
    before = machine()
    with private_dovecot() as server, ThreadedReceiver(default_status=200) as receiver:
        user = fill_mailbox(server, generate_messages(args.messages, seed=7, size=5000))
        account = server.plain_account(user, "bench")

        def once(tree: Path) -> Sample:
            run = Path(tempfile.mkdtemp(dir=work))
            cfg = poller_config(run / "c.yaml", run / "state.db", receiver, [account])
            done = run_once(cfg, receiver, args.messages, tree=tree)
            shutil.rmtree(run)
            return Sample(done.seconds, args.messages)

        contenders = [
            Contender("with custody trail", lambda: once(HERE)),
            Contender("baseline (no trail)", lambda: once(args.baseline.resolve())),
        ]
        samples = alternate(contenders, args.rounds)
    shutil.rmtree(work, ignore_errors=True)
    results = {name: summarize(s) for name, s in samples.items()}
    mine, base = results["with custody trail"], results["baseline (no trail)"]
    ratio = mine["median_rate"] / base["median_rate"] if base["median_rate"] else 0.0
    cpu = mine["median_cpu_ms_per_item"] / max(base["median_cpu_ms_per_item"], 1e-9)
    data: dict[str, Any] = {
        "benchmark": "custody_cost",
        "messages": args.messages,
        "rounds": args.rounds,
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
    print(f"\nthroughput with the trail / without: {ratio:.3f} (target >= 0.90)")
    print(f"CPU per message with the trail / without: {cpu:.3f}")
    print(f"results: {write_results('custody_cost', data)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Start-up cost of `pop3bridge once` up to validated settings, this tree beside others.

    python bench/startup.py [--baseline DIR ...] [--rounds 15] [--accounts 20]

Each round runs, in a fresh interpreter per tree (alternated, so load on the shared machine
hits every tree alike), what `pop3bridge once` does before its first connection: parse the
command line (importing the `once` command and all it runs), then load and validate a small
configuration file with a secret file and an environment override. Reported per tree: the
median and least CPU time (user + system, which the machine's other load disturbs far less
than wall time) from the first import to validated settings, the median wall time of the whole
process, the modules imported, and the ratio of the medians to this tree. A DIR is another
checkout (e.g. ``/work/main``); it runs with ``PYTHONPATH=DIR`` on this interpreter.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

PROBE = """\
import sys, time
t0 = time.process_time()
import argparse
from bridge.cli import build_parser
build_parser(["once", "--config", sys.argv[1]])
from bridge.commands._common import load
settings = load(argparse.Namespace(config=sys.argv[1]))
assert settings.accounts[0].poll_interval == 30
print(time.process_time() - t0, len(sys.modules))
"""


def write_config(work: Path, accounts: int) -> Path:
    (work / "pw").write_text("correct-horse\n")
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    data = {
        "state": {"url": f"sqlite:///{work / 'state.db'}"},
        "webhooks": [{"name": "main", "url": "http://127.0.0.1:9/hook", "secret": secret}],
        "accounts": [
            {
                "name": f"acct{i}",
                "url": f"pop3s://user{i}@127.0.0.1:995",
                "password_file": "pw",
                "webhook": "main",
            }
            for i in range(accounts)
        ],
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(tree: Path, config: Path) -> tuple[float, float, int]:
    env = {**os.environ, "PYTHONPATH": str(tree), "POP3BRIDGE_ACCOUNTS__acct0__POLL_INTERVAL": "30"}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        check=True,
    )
    wall = time.perf_counter() - start
    inner, modules = out.stdout.split()
    return float(inner), wall, int(modules)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", action="append", default=[], type=Path)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--accounts", type=int, default=20, help="accounts in the config file")
    args = parser.parse_args()
    trees = [ROOT, *(p.resolve() for p in args.baseline)]
    results: dict[Path, list[tuple[float, float, int]]] = {t: [] for t in trees}
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), args.accounts)
        for tree in trees:  # warm the file cache and .pyc files; not counted
            run(tree, config)
        for _ in range(args.rounds):
            for tree in trees:
                results[tree].append(run(tree, config))
    load = os.getloadavg()[0]
    print(f"{args.rounds} rounds, {args.accounts} accounts, load {load:.1f}, {sys.executable}")
    print(
        f"{'tree':<28} {'CPU to settings ms':>19} {'min':>7} {'wall ms':>9} {'modules':>8} "
        f"{'ratio':>6}"
    )
    mine = statistics.median(r[0] for r in results[ROOT])
    for tree, rows in results.items():
        inner = statistics.median(r[0] for r in rows)
        wall = statistics.median(r[1] for r in rows)
        low = min(r[0] for r in rows)
        print(
            f"{tree!s:<28} {inner * 1000:>19.1f} {low * 1000:>7.1f} {wall * 1000:>9.1f} "
            f"{rows[0][2]:>8} {inner / mine:>6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

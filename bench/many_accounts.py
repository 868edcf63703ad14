"""Many accounts: first full cycle over 1,000 Dovecot accounts, then the CPU cost of idle polling.

    python bench/many_accounts.py [--accounts 1000] [--per-account 3] [--interval 20]
                                  [--idle-seconds 60] [--quick]

`pop3bridge run` (a subprocess, default poller settings: 10 accounts polled at once) polls every
account of a private Dovecot. The first full cycle is the time from start until the receiver
has every message verified (so it includes start-up, logins and delivery). Then, with no new
mail, the bridge's CPU time (user + system, psutil) is read over `--idle-seconds`. To keep the
run short the poll interval is `--interval` (20 s) rather than 60 s; each account is polled
interval/idle times as often as at 60 s, so the cost per minute at 60 s is the measured cost
scaled by interval/60 (assumes cost per poll is constant, which holds once nothing is new).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from _harness import (
    fill_mailbox,
    machine,
    poller_config,
    print_table,
    private_dovecot,
    write_results,
)

from bridge.testing.samples import generate_messages
from tests.support.receiver import ThreadedReceiver

VENV_BIN = Path(sys.executable).parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--per-account", type=int, default=3)
    ap.add_argument("--interval", type=float, default=20.0)
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 accounts, 10 s idle")
    args = ap.parse_args()
    if args.quick:
        args.accounts, args.interval, args.idle_seconds = 20, 5.0, 10.0
    work = Path(tempfile.mkdtemp(prefix="pop3bridge-bench-many-"))
    before = machine()
    total = args.accounts * args.per_account
    with private_dovecot() as server, ThreadedReceiver(default_status=200) as rx:
        t = time.perf_counter()
        pool = generate_messages(50, seed=11, size=5000)
        accounts = []
        for i in range(args.accounts):
            msgs = [pool[(i + k) % len(pool)] for k in range(args.per_account)]
            user = fill_mailbox(server, msgs)
            accounts.append(
                {**server.plain_account(user, f"a{i:04d}"), "poll_interval": args.interval}
            )
        print(
            f"{args.accounts} accounts x {args.per_account} messages set up in "
            f"{time.perf_counter() - t:.1f} s"
        )
        cfg = poller_config(work / "c.yaml", work / "state.db", rx, accounts)
        log = open(work / "bridge.log", "wb")  # noqa: SIM115
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(VENV_BIN / "pop3bridge"), "run", "--config", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        ps = psutil.Process(proc.pid)
        try:
            deadline = start + max(600.0, total / 20)
            while len({r.msg_id for r in rx.requests if r.verified}) < total:
                if proc.poll() is not None or time.perf_counter() > deadline:
                    raise SystemExit(
                        f"bridge stopped or timed out with {len(rx.requests)} of {total}: "
                        f"{(work / 'bridge.log').read_text()[-2000:]}"
                    )
                time.sleep(0.05)
            cycle = time.perf_counter() - start
            cpu_cycle = sum(ps.cpu_times()[:2])
            print(
                f"first full cycle: {cycle:.1f} s ({total} messages delivered), "
                f"CPU {cpu_cycle:.1f} s"
            )
            # Let the polls of the first cycle finish and the schedule settle on the interval.
            time.sleep(args.interval)
            delivered = len(rx.requests)
            c0, w0 = sum(ps.cpu_times()[:2]), time.perf_counter()
            rss = []
            while time.perf_counter() - w0 < args.idle_seconds:
                time.sleep(1.0)
                rss.append(ps.memory_info().rss)
            c1, w1 = sum(ps.cpu_times()[:2]), time.perf_counter()
            logins = server.log_text().count("pop3-login: Login:")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        if len(rx.requests) != delivered or rx.invalid:
            raise SystemExit("idle window was not idle (new deliveries) or signatures failed")
    idle_share = (c1 - c0) / (w1 - w0)  # fraction of one core at the benchmark's interval
    at_60 = idle_share * args.interval / 60.0
    after = machine()
    data: dict[str, Any] = {
        "benchmark": "many_accounts",
        "accounts": args.accounts,
        "messages": total,
        "interval_measured": args.interval,
        "first_cycle_seconds": cycle,
        "first_cycle_cpu_seconds": cpu_cycle,
        "idle_window_seconds": w1 - w0,
        "idle_cpu_seconds": c1 - c0,
        "idle_core_share_at_measured_interval": idle_share,
        "idle_core_share_at_60s": at_60,
        "idle_cpu_seconds_per_minute_at_60s": at_60 * 60,
        "idle_rss_max": max(rss),
        "dovecot_logins_total": logins,
        "machine_before": before,
        "machine_after": after,
        "target": {"goal_core_share": 0.05, "met": at_60 < 0.05},
    }
    path = write_results("many_accounts" + ("_quick" if args.quick else ""), data)
    print_table(
        f"Many accounts ({args.accounts} accounts, {total} messages)",
        ["measure", "value"],
        [
            ["first full cycle (s)", cycle],
            ["first cycle throughput (msg/s)", total / cycle],
            [f"idle CPU at {args.interval:.0f} s interval (% of one core)", 100 * idle_share],
            ["idle CPU at 60 s interval (% of one core)", 100 * at_60],
            ["idle CPU per minute at 60 s (CPU s)", at_60 * 60],
            ["RSS while idle (MB)", max(rss) / 1e6],
        ],
    )
    print(f"\ntarget < 5% of one core at 60 s: {'met' if at_60 < 0.05 else 'NOT met'}")
    print(
        f"machine: {before['nproc']} x {before['cpu']}; load {before['loadavg']} -> "
        f"{after['loadavg']}\nresults: {path}"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

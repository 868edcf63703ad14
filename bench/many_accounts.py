"""Many accounts: the first full cycle over 1,000 accounts, then 10,000 idle accounts at 60 s.

    python bench/many_accounts.py [--accounts 1000] [--per-account 3] [--idle-accounts 10000]
                                  [--interval 60] [--idle-seconds 60] [--concurrency N]
                                  [--dovecot tuned|one-login|forking] [--tls] [--quick]
                                  [--profile DIR]
                                  [--receiver nginx|python|both] [--rounds N] [--baseline DIR]
                                  [--first-only] [--idle-only] [--idle-rounds N] [--no-floor]
                                  [--auth MECH]

One private Dovecot holds `--idle-accounts` users (a passwd-file line each, as the test suite
makes them); the first `--accounts` of them get `--per-account` messages. Two `pop3bridge run`
processes (default poller settings unless `--concurrency`) share one SQLite state file:

1. **First full cycle**: the `--accounts` accounts with mail, each run on a fresh state file.
   Timed from exec until the receiver has every message (start-up, logins, fetch, parse and
   delivery included), then the process is stopped. `--receiver` picks the receiver: `nginx`
   (bench/_webhook_nginx.py: takes almost no CPU, bodies on tmpfs, every signature verified
   with `standardwebhooks` after the clock; the cycle ends when nginx has logged every
   message; issue 17's target is on this one), `python` (tests.support.receiver in this
   process, verifying each signature as it arrives, on the same two cores as the bridge) or
   `both` (the default: one run each, nginx first). `--rounds N` repeats them, and
   `--baseline DIR` runs another checkout's `bridge` package in turns with this one (this,
   baseline, this, ...), for ratios; medians are reported. The RSS of this tree's last nginx
   run is the baseline for the per-account figure. `--first-only` stops after phase 1. Each
   run also reads its state file's outbox for when (from exec, on the bridge's clock) the
   last message was recorded and the last was marked delivered: the difference, the
   delivery tail, is mail still unsent when the polls had ended.
2. **Idle**: all `--idle-accounts` accounts at `--interval`. Once every account has been polled
   (Dovecot's log counts the logins) the bridge's CPU (user + system, with its parse worker) is
   read over `--idle-seconds`, which at the default equals one interval: each account is polled
   about once in the window. Nothing is new, so nothing may be delivered in it.

RSS per account is (idle RSS with all accounts - RSS after phase 1) / (the accounts added): what
one more idle account costs. RSS is the bridge's plus its parse worker's.

For quick, alternated comparisons of phase 2: `--idle-only` skips phase 1 (no account has mail,
so there is no RSS-per-added-account figure); with `--baseline` phase 2 also runs the other
tree, in turns with this one for `--idle-rounds` rounds (baseline first in odd rounds), each
run printing its CPU per poll and sleeps per poll (voluntary context switches: how often the
process found nothing to do); `--no-floor` skips the minimal client. Fewer accounts at a
proportionally shorter interval keep the rate of polls (`--idle-accounts 2000 --interval 12
--idle-seconds 24`: 167 per second, as 10,000 at 60 s), though the per-poll figure grows a
little with the number of accounts. `--auth` sets the accounts' `auth:` (default: not set, so
`auto`, which picks CRAM-MD5 over plain POP3).

`--dovecot tuned` (the default) runs Dovecot's login and pop3 processes in its high-performance
mode (processes reused instead of two forks per session); `one-login` is the same with a single
login process, so that TLS sessions resume (with `--tls`); `forking` is the suite's config as
is. On this 2-core machine the forking Dovecot spends about 15 ms of CPU per session, so 10,000
accounts at 60 s (167 sessions/s) would need 2.5 cores for Dovecot alone: the server, not the
bridge, would be measured. Servers that people poll many accounts on do not fork twice per
login either.

`--tls` polls over POP3S (implicit TLS, the test CA as `ca_file`; results go to
many_accounts_tls.json); the floor stays plain POP3. `pop3bridge run` runs on uvloop when it
is installed; `POP3BRIDGE_EVENT_LOOP=asyncio` (or `uvloop`) in the environment picks the loop
(results go to many_accounts_asyncio.json, many_accounts_uvloop.json). Last, the floor: the same
idle session (seven exchanges) from a minimal asyncio protocol with no POP3 library, store or
scheduler, on both loops, to show what the sockets and the event loop alone cost per poll. It
runs twice: all sessions at once (10 at a time), and paced at the idle phase's polls per second.
Paced, every exchange finds the other side asleep and wakes it, which costs more than in a
burst (about 0.4 against 0.2 ms per session on uvloop here): that is the floor the idle phase's
figure compares with.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from _harness import (
    compiled_bridge,
    fill_mailbox,
    has_module,
    machine,
    poller_config,
    print_table,
    private_dovecot,
    write_results,
)
from _webhook_nginx import NginxReceiver

from bridge.testing.samples import generate_messages
from tests.support.dovecot import ONE_LOGIN_PROCESS, DovecotServer
from tests.support.receiver import ThreadedReceiver

VENV_BIN = Path(sys.executable).parent

# Appended to the suite's generated config: Dovecot merges a service block given twice.
# service_count = 0 keeps a process for later sessions instead of one process per session
# (pop3 processes then serve users one after another: all mail users here are one uid).
TUNED = """
service pop3-login {
  service_count = 0
  process_min_avail = 2
}
service pop3 {
  service_count = 0
  process_min_avail = 4
}
"""


class TunedDovecot(DovecotServer):
    def _config(self) -> str:
        return super()._config() + TUNED


class OneLoginDovecot(TunedDovecot):
    """One login process for every connection, so TLS sessions resume (each Dovecot login
    process has its own ticket key and session cache: with two a ticket is taken about every
    other time and the client stops offering, bridge/pop3/resumption.py); the suite's
    `OneLoginProcessDovecot` block on top of the tuned pop3 processes."""

    def _config(self) -> str:
        return super()._config() + ONE_LOGIN_PROCESS


@contextlib.contextmanager
def dovecot(kind: str) -> Iterator[DovecotServer]:
    # 10,000 maildirs on tmpfs: on a disk mounted with online discard, removing them afterwards
    # took minutes (one discard per directory).
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="pop3bridge-dovecot-", dir=shm)) if shm.is_dir() else None
    kinds = {"tuned": TunedDovecot, "one-login": OneLoginDovecot, "forking": DovecotServer}
    with private_dovecot(kinds[kind], root) as server:
        yield server


class Logins:
    """Counts Dovecot's successful logins, reading only what its log gained since last time."""

    def __init__(self, server: DovecotServer) -> None:
        self.path = server.log_file
        self.offset = 0
        self.count = 0
        self._tail = b""

    def __call__(self) -> int:
        with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as f:
            f.seek(self.offset)
            data = self._tail + f.read()
            self.offset = f.tell()
            cut = data.rfind(b"\n") + 1
            self._tail = data[cut:]
            self.count += data[:cut].count(b"pop3-login: Info: Login:")
        return self.count


class Bridge:
    """`pop3bridge run` as a child, with its CPU and RSS read together with its children's."""

    def __init__(
        self,
        config: Path,
        log: Path,
        profile: Path | None,
        tree: Path | None = None,
        cprofile: Path | None = None,
        callgrind: Path | None = None,
    ) -> None:
        compiled_bridge(tree)  # as deployed: the package's .pyc written, not compiled per run
        cmd = [str(VENV_BIN / "pop3bridge"), "run", "--config", str(config)]
        env = None
        if tree is not None:  # another checkout's bridge package (-P: not this one's via cwd)
            env = {**os.environ, "PYTHONPATH": str(tree)}
            cmd = [sys.executable, "-P", "-m", "bridge", "run", "--config", str(config)]
        self.cprofile = cprofile
        if cprofile is not None:  # `run` under CPROFILED, told when to start and stop
            cmd = [sys.executable, "-P", "-c", CPROFILED, str(cprofile), *cmd[-3:]]
        self.callgrind = callgrind
        if callgrind is not None:  # counted only between `profiling(True)` and (False)
            cmd = [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={callgrind}",
                *cmd,
            ]
        elif profile is not None:
            pyinstrument = [str(VENV_BIN / "python"), "-m", "pyinstrument", "-i", "0.001"]
            cmd = [*pyinstrument, "-r", "text", "-o", str(profile), *cmd]
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.ps = psutil.Process(self.proc.pid)

    def _tree(self) -> list[psutil.Process]:
        procs = [self.ps]
        with contextlib.suppress(psutil.Error):
            procs += self.ps.children(recursive=True)
        return procs

    def cpu(self) -> float:
        total = 0.0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def wakeups(self) -> int:
        """Voluntary context switches: how often the tree went to sleep waiting for work."""
        total = 0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                total += p.num_ctx_switches().voluntary
        return total

    def rss(self) -> int:
        total = 0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def profiling(self, on: bool) -> None:
        """Start (`on`) or stop and write the `--cprofile` profile of the event-loop thread."""
        if self.cprofile is not None:
            self.proc.send_signal(signal.SIGUSR1 if on else signal.SIGUSR2)
        if self.callgrind is not None:
            pid = str(self.proc.pid)
            for step in (["-i", "on"],) if on else (["-d"], ["-i", "off"]):
                subprocess.run(["callgrind_control", *step, pid], capture_output=True, check=True)

    def instructions(self) -> int:
        """Instructions the bridge's process ran while counted (`--callgrind`), from the dumps
        `profiling(False)` wrote (the parse worker, a child, is not counted)."""
        assert self.callgrind is not None
        total = 0
        for dump in self.callgrind.parent.glob(self.callgrind.name + "*"):
            for line in dump.read_text().splitlines():
                if line.startswith(("summary:", "totals:")):
                    total += int(line.split()[1])
                    break
        return total

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"bridge exited: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


# `pop3bridge run` with cProfile on the main (event-loop) thread, timed by that thread's CPU
# time (`time.thread_time`: the SQLite thread's and the parse worker's work, and time spent
# asleep, do not count): SIGUSR1 starts it, SIGUSR2 stops it and writes argv[1] (pstats).
# The profiler's own cost per call inflates small functions, so read shares, not times.
CPROFILED = r"""
import cProfile, signal, sys, time
out, sys.argv = sys.argv[1], ["pop3bridge", *sys.argv[2:]]
prof = cProfile.Profile(time.thread_time)
signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
def stop(*_):
    prof.disable()
    prof.dump_stats(out)
signal.signal(signal.SIGUSR2, stop)
from bridge.cli import main
sys.exit(main())
"""


@dataclass
class Cycle:
    """One phase-1 run: exec until the receiver had every message."""

    seconds: float
    cpu: float  # the bridge's (with its parse worker), read when the last message arrived
    rss: int
    load: float  # 1-minute load average when it ended
    db: Path
    # From exec, by the state file's outbox (the bridge's own clock): when the last message
    # was recorded (the polls' end) and when the last was marked delivered. Their difference
    # is the delivery tail: mail recorded but not yet sent when the last session ended.
    last_recorded: float = 0.0
    last_delivered: float = 0.0

    @property
    def tail(self) -> float:
        return self.last_delivered - self.last_recorded


def first_cycle(
    cfg_for: Callable[[Path, Any], Path],
    run: Path,
    receiver: Any,
    total: int,
    *,
    tree: Path | None,
    profile: Path | None,
) -> Cycle:
    """Run `pop3bridge run` over the accounts with mail on a fresh state file in `run` until
    `receiver` has `total` distinct messages, then stop it and check every one: verified,
    each message once at least, no bad signature. The nginx receiver is only counted while
    the clock runs (a log line per answered request) and verified afterwards."""
    run.mkdir(parents=True)
    db = run / "state.db"
    cfg = cfg_for(db, receiver)
    before = len(receiver.requests)
    counted = getattr(receiver, "count", None)
    start_count = counted() if counted is not None else 0
    exec_at = time.time()  # the outbox's timestamps are the bridge's time.time()
    bridge = Bridge(cfg, run / "first.log", profile, tree)
    try:
        deadline = bridge.started + max(600.0, total / 20)
        while True:
            if counted is not None:
                done = counted() - start_count >= total
            else:
                done = len({r.msg_id for r in receiver.requests[before:] if r.verified}) >= total
            if done:
                break
            bridge.check()
            if time.perf_counter() > deadline:
                raise SystemExit(f"timed out before {total} messages were delivered")
            time.sleep(0.02)
        cycle = time.perf_counter() - bridge.started
        cpu, rss = bridge.cpu(), bridge.rss()
    finally:
        bridge.stop()
    got = receiver.requests[before:]  # the nginx receiver verifies here, after the clock
    verified = {r.msg_id for r in got if r.verified}
    if len(verified) != total or receiver.invalid:
        raise SystemExit(
            f"first cycle: {len(verified)} of {total} messages verified, "
            f"{receiver.invalid} invalid ({len(got)} requests)"
        )
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        recorded, delivered = conn.execute(
            "SELECT max(created_at), max(finished_at) FROM outbox"
        ).fetchone()
    return Cycle(cycle, cpu, rss, os.getloadavg()[0], db, recorded - exec_at, delivered - exec_at)


# The poller's idle session (greeting, CAPA, AUTH PLAIN, CAPA, STAT, UIDL, QUIT: seven
# exchanges) from a client that only writes each command and waits for its answer's end: what
# the sockets and the event loop cost, with no POP3 library, store or scheduler. Run in a child
# so the loop kind is chosen freshly; prints CPU ms per session. With a rate, session i starts
# i/rate seconds in (still at most 10 at once): sessions paced as the idle phase's polls are.
FLOOR = r"""
import asyncio, base64, sys, time
host, port, loop_kind, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
users = [line.split("\t") for line in sys.stdin.read().splitlines()]
if loop_kind == "uvloop":
    import uvloop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
class P(asyncio.Protocol):
    def __init__(self):
        self.buf, self.waiter, self.done = b"", None, None
    def connection_made(self, t):
        self.t = t
    def data_received(self, d):
        self.buf += d
        if self.waiter is not None and self.done(self.buf):
            self.waiter.set_result(None)
            self.waiter = None
    async def ask(self, data, ends):
        if data:
            self.t.write(data)
        self.done = lambda b: b.startswith(b"-ERR") or b.endswith(ends)
        if not self.done(self.buf):
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        self.buf = b""
async def session(user, password):
    t, p = await asyncio.get_running_loop().create_connection(P, host, port)
    await p.ask(b"", b"\r\n")
    await p.ask(b"CAPA\r\n", b"\r\n.\r\n")
    ir = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())
    await p.ask(b"AUTH PLAIN " + ir + b"\r\n", b"\r\n")
    await p.ask(b"CAPA\r\n", b"\r\n.\r\n")
    await p.ask(b"STAT\r\n", b"\r\n")
    await p.ask(b"UIDL\r\n", b"\r\n.\r\n")
    await p.ask(b"QUIT\r\n", b"\r\n")
    t.close()
async def main():
    gate = asyncio.Semaphore(10)
    async def one(i, u):
        if rate:
            await asyncio.sleep(i / rate)
        async with gate:
            await session(*u)
    await asyncio.gather(*(one(i, u) for i, u in enumerate(users)))
c0 = time.process_time()
asyncio.run(main())
print(1000 * (time.process_time() - c0) / len(users))
"""


def floor_session_ms(
    server: DovecotServer, users: list[tuple[str, str]], loop: str, rate: float = 0.0
) -> float | None:
    """CPU ms per session of the minimal client: all at once, 10 at a time (`rate` 0), or
    started `rate` per second."""
    if loop == "uvloop" and not has_module("uvloop"):
        return None
    out = subprocess.run(
        [sys.executable, "-c", FLOOR, server.host, str(server.pop3_port), loop, str(rate)],
        input="\n".join(f"{u}\t{p}" for u, p in users),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return round(float(out.stdout.strip()), 3)


def idle_phase(
    args: argparse.Namespace,
    cfg: Path,
    work: Path,
    rx: ThreadedReceiver,
    logins: Logins,
    prof: Path | None,
    tree: Path | None,
    cprofile: Path | None = None,
    callgrind: Path | None = None,
) -> dict[str, float]:
    """Phase 2 once: `pop3bridge run` (of `tree`, else this checkout) over every account, its
    CPU read over `--idle-seconds` once each account was polled."""
    delivered = len(rx.requests)
    first_logins = logins()
    bridge = Bridge(cfg, work / "idle.log", prof, tree, cprofile, callgrind)
    try:
        deadline = bridge.started + max(600.0, args.idle_accounts / 10)
        while logins() - first_logins < args.idle_accounts:
            bridge.check()
            if time.perf_counter() > deadline:
                raise SystemExit("not every account was polled in time")
            time.sleep(0.5)
        warm = time.perf_counter() - bridge.started
        print(f"every one of {args.idle_accounts} accounts polled {warm:.1f} s after exec")
        time.sleep(min(5.0, args.interval / 4))
        bridge.profiling(True)
        c0, w0, n0, s0 = bridge.cpu(), time.perf_counter(), logins(), bridge.wakeups()
        rss = []
        while time.perf_counter() - w0 < args.idle_seconds:
            time.sleep(1.0)
            bridge.check()
            rss.append(bridge.rss())
        c1, w1, n1, s1 = bridge.cpu(), time.perf_counter(), logins(), bridge.wakeups()
        bridge.profiling(False)
        if cprofile is not None:
            time.sleep(2.0)  # the profile is written between two callbacks of the loop
        instructions = bridge.instructions() if callgrind is not None else 0
    finally:
        bridge.stop()
    if len(rx.requests) != delivered or rx.invalid:
        raise SystemExit("idle phase was not idle (new deliveries) or signatures failed")
    polls = n1 - n0
    return {
        "cpu": c1 - c0,
        "window": w1 - w0,
        "polls": polls,
        "share": (c1 - c0) / (w1 - w0),
        "ms_per_poll": 1000 * (c1 - c0) / max(polls, 1),
        "sleeps_per_poll": (s1 - s0) / max(polls, 1),
        "instructions_per_poll": instructions / max(polls, 1),
        "rss": max(rss),
        "warm": warm,
        "load": os.getloadavg()[0],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--per-account", type=int, default=3)
    ap.add_argument("--idle-accounts", type=int, default=10000)
    ap.add_argument("--interval", type=float, default=60.0)
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--concurrency", type=int, default=None, help="max_concurrent_accounts")
    ap.add_argument("--dovecot", choices=["tuned", "one-login", "forking"], default="tuned")
    ap.add_argument("--tls", action="store_true", help="POP3S (trusting the test CA file)")
    ap.add_argument("--profile", type=Path, default=None, help="pyinstrument text per phase")
    ap.add_argument(
        "--cprofile",
        type=Path,
        default=None,
        help="phase 2: cProfile of the event-loop thread's CPU over the window, per run (pstats)",
    )
    ap.add_argument(
        "--callgrind",
        type=Path,
        default=None,
        help="phase 2 under callgrind, counted over the window: instructions per poll (a "
        "figure the load does not move; about 50x slower, so use ~200 accounts at 12 s)",
    )
    ap.add_argument(
        "--floor-sessions", type=int, default=2000, help="sessions of the minimal client"
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 / 200 accounts, 10 s")
    ap.add_argument(
        "--receiver",
        choices=["nginx", "python", "both"],
        default="both",
        help="phase 1's receiver(s); the target is on nginx",
    )
    ap.add_argument("--rounds", type=int, default=1, help="phase-1 rounds (medians reported)")
    ap.add_argument("--baseline", type=Path, default=None, help="a tree to alternate with")
    ap.add_argument("--first-only", action="store_true", help="phase 1 only")
    ap.add_argument(
        "--first-concurrency",
        default=None,
        help="phase 1 in turns at each of these max_concurrent_accounts (e.g. 10,20)",
    )
    ap.add_argument("--idle-only", action="store_true", help="phase 2 only (no account has mail)")
    ap.add_argument("--idle-rounds", type=int, default=1, help="phase-2 rounds with --baseline")
    ap.add_argument("--no-floor", action="store_true", help="skip the minimal client")
    ap.add_argument("--auth", default=None, help="the accounts' auth: (default: auto)")
    args = ap.parse_args()
    if args.quick:
        args.accounts, args.idle_accounts, args.interval, args.idle_seconds = 20, 200, 10.0, 10.0
    if args.idle_only:
        args.accounts = 0
    if args.first_only:
        args.idle_accounts = args.accounts  # no idle users to set up
    args.idle_accounts = max(args.idle_accounts, args.accounts)
    work = Path(tempfile.mkdtemp(prefix="pop3bridge-bench-many-"))
    before = machine()
    total = args.accounts * args.per_account
    poller = {} if args.concurrency is None else {"max_concurrent_accounts": args.concurrency}
    for folder in (args.profile, args.cprofile, args.callgrind):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    receivers = ["nginx", "python"] if args.receiver == "both" else [args.receiver]
    trees: dict[str, Path | None] = {"this": None}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    # Phase 1's variants: each tree at each concurrency ("this@c20"; no suffix: --concurrency).
    levels = [int(c) for c in args.first_concurrency.split(",")] if args.first_concurrency else []
    variants = [
        (f"{name}@c{c}" if c else name, tree, c)
        for name, tree in trees.items()
        for c in (levels or [None])
    ]
    with (
        dovecot(args.dovecot) as server,
        ThreadedReceiver(default_status=200) as rx,
        contextlib.ExitStack() as stack,
    ):
        nginx = stack.enter_context(NginxReceiver()) if "nginx" in receivers else None
        t = time.perf_counter()
        pool = generate_messages(50, seed=11, size=5000)
        accounts = []
        for i in range(args.idle_accounts):
            msgs = [pool[(i + k) % len(pool)] for k in range(args.per_account)]
            user = fill_mailbox(server, msgs if i < args.accounts else [])
            accounts.append(
                {
                    **(server.pop3s_account(user) if args.tls else server.plain_account(user, "")),
                    "name": f"a{i:05d}",
                    "poll_interval": args.interval,
                    **({"auth": args.auth} if args.auth else {}),
                }
            )
        print(
            f"{args.idle_accounts} Dovecot users ({args.accounts} x {args.per_account} "
            f"messages) set up in {time.perf_counter() - t:.1f} s; load {os.getloadavg()[0]:.2f}"
        )
        logins = Logins(server)
        db = work / "state.db"

        # -- phase 1: first full cycle over the accounts with mail ----------------------------
        def configure(level: int | None) -> Callable[[Path, Any], Path]:
            settings = poller if level is None else {"max_concurrent_accounts": level}

            def cfg_for(db: Path, receiver: Any) -> Path:
                accs = accounts[: args.accounts]
                return poller_config(db.with_suffix(".yaml"), db, receiver, accs, poller=settings)

            return cfg_for

        cycles: dict[tuple[str, str], list[Cycle]] = {}
        for r in range(0 if args.idle_only else args.rounds):
            for name, tree, level in variants:
                cfg_for = configure(level)
                for kind in receivers:
                    receiver = nginx if kind == "nginx" else rx
                    prof = None
                    if args.profile is not None and tree is None:
                        prof = args.profile / f"first_cycle_{kind}.txt"
                    run = work / f"first-{r}-{name}-{kind}"
                    c = first_cycle(cfg_for, run, receiver, total, tree=tree, profile=prof)
                    cycles.setdefault((name, kind), []).append(c)
                    print(
                        f"first full cycle ({name}, {kind} receiver): {c.seconds:.2f} s for "
                        f"{args.accounts} accounts ({total} messages), CPU {c.cpu:.2f} s, "
                        f"RSS {c.rss / 1e6:.0f} MB; load {c.load:.2f}; last recorded at "
                        f"{c.last_recorded:.2f} s, last delivered at {c.last_delivered:.2f} s "
                        f"(tail {c.tail:.2f} s)"
                    )
        # The target's figure: this tree on the first receiver (nginx unless told otherwise).
        main = cycles.get((variants[0][0], receivers[0]), [])
        cycle = statistics.median(c.seconds for c in main) if main else 0.0
        cpu_cycle = statistics.median(c.cpu for c in main) if main else 0.0
        rss_first = main[-1].rss if main else 0
        db = main[-1].db if main else db
        first: dict[str, Any] = {
            f"{name}/{kind}": {
                "seconds": [c.seconds for c in cs],
                "cpu_seconds": [c.cpu for c in cs],
                "load": [c.load for c in cs],
                "median_seconds": statistics.median(c.seconds for c in cs),
                "median_cpu_seconds": statistics.median(c.cpu for c in cs),
                "last_recorded_seconds": [c.last_recorded for c in cs],
                "tail_seconds": [c.tail for c in cs],
            }
            for (name, kind), cs in cycles.items()
        }
        rows = [
            [f"{name}, {kind} receiver", v["median_seconds"], v["median_cpu_seconds"]]
            for (name, kind), v in zip(cycles, first.values(), strict=True)
        ]
        print_table(
            f"First full cycle, {args.accounts} accounts, {total} messages (medians of "
            f"{args.rounds})",
            ["tree, receiver", "wall (s)", "bridge CPU (s)"],
            rows,
        )
        if len(variants) > 1 and not args.idle_only:
            for kind in receivers:
                ref = first[f"{variants[0][0]}/{kind}"]
                for name, _, _ in variants[1:]:
                    v = first[f"{name}/{kind}"]
                    print(
                        f"{kind}: {name} / {variants[0][0]}: wall "
                        f"{v['median_seconds'] / ref['median_seconds']:.3f}, CPU "
                        f"{v['median_cpu_seconds'] / ref['median_cpu_seconds']:.3f}"
                    )
        if args.first_only:
            after = machine()
            data_first: dict[str, Any] = {
                "benchmark": "many_accounts_first",
                "accounts": args.accounts,
                "messages": total,
                "receivers": receivers,
                "baseline": str(args.baseline) if args.baseline else None,
                "max_concurrent_accounts": levels or args.concurrency or "default",
                "first_cycle_seconds": cycle,
                "first_cycle_cpu_seconds": cpu_cycle,
                "first_cycle": first,
                "machine_before": before,
                "machine_after": after,
                "targets": {"first_cycle_le_5s": cycle <= 5.0},
            }
            path = write_results("many_accounts_first", data_first)
            print(
                f"\nfirst cycle <= 5 s ({receivers[0]} receiver): "
                f"{'met' if cycle <= 5 else 'NOT met'}\nload {before['loadavg']} -> "
                f"{after['loadavg']}\nresults: {path}"
            )
            shutil.rmtree(work, ignore_errors=True)
            return 0

        # -- phase 2: every account, idle (in turns with --baseline) ------------------------
        # Each tree on its own state file (its phase-1 one when there was a phase 1): a
        # baseline may not read a schema this tree upgraded.
        cfgs = {
            name: poller_config(
                work / f"idle-{name}.yaml",
                cycles[(name, receivers[0])][-1].db
                if (name, receivers[0]) in cycles
                else (db if name == "this" else work / f"state-{name}.db"),
                rx,
                accounts,
                poller=poller,
            )
            for name in trees
        }
        order = list(trees.items())
        idle_runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for r in range(args.idle_rounds if args.baseline is not None else 1):
            for name, tree in order if r % 2 else order[::-1]:
                prof = args.profile / f"idle_{name}_{r}.txt" if args.profile else None
                cprof = args.cprofile / f"idle_{name}_{r}.prof" if args.cprofile else None
                grind = args.callgrind / f"idle_{name}_{r}.out" if args.callgrind else None
                figures = idle_phase(args, cfgs[name], work, rx, logins, prof, tree, cprof, grind)
                idle_runs[name].append(figures)
                print(
                    f"  idle ({name}): {100 * figures['share']:.2f} % of a core, "
                    f"{figures['ms_per_poll']:.3f} ms per poll ({figures['polls']} polls, "
                    f"{figures['sleeps_per_poll']:.2f} sleeps each), "
                    + (
                        f"{figures['instructions_per_poll'] / 1e3:.1f} K instructions each, "
                        if args.callgrind
                        else ""
                    )
                    + f"RSS {figures['rss'] / 1e6:.0f} MB; load {figures['load']:.2f}"
                )
        idle = idle_runs["this"][-1]
        c0, c1, w0, w1, polls = 0.0, idle["cpu"], 0.0, idle["window"], int(idle["polls"])
        warm = idle["warm"]
        rss = [int(idle["rss"])]

        # -- the floor: the same idle session from a minimal client ---------------------------
        floor: dict[str, float | None] = {}
        paced: dict[str, float | None] = {}
        users = [(a["username"], a["password"]) for a in accounts[: args.floor_sessions]]
        rate = args.idle_accounts / args.interval
        for loop in ("asyncio", "uvloop") if not args.no_floor else ():
            floor[loop] = floor_session_ms(server, users, loop)
            paced[loop] = floor_session_ms(server, users, loop, rate)
        print("floor, CPU ms per idle session: " + ", ".join(f"{k} {v}" for k, v in floor.items()))
        print(
            f"floor paced at {rate:.0f} sessions/s: "
            + ", ".join(f"{k} {v}" for k, v in paced.items())
        )
        # Reported before the with-block removes 10,000 maildirs (minutes on a discarding disk).
        share = (c1 - c0) / (w1 - w0)
        rss_idle = max(rss)
        added = args.idle_accounts - args.accounts
        per_account = (rss_idle - rss_first) / added if added and rss_first else float("nan")
        after = machine()
        data: dict[str, Any] = {
            "benchmark": "many_accounts",
            "dovecot": args.dovecot,
            "tls": args.tls,
            "max_concurrent_accounts": args.concurrency or "default",
            "accounts": args.accounts,
            "messages": total,
            "first_cycle_receiver": receivers[0],
            "first_cycle_seconds": cycle,
            "first_cycle_cpu_seconds": cpu_cycle,
            "first_cycle_rss": rss_first,
            "first_cycle": first,
            "idle_accounts": args.idle_accounts,
            "interval": args.interval,
            "idle_warmup_seconds": warm,
            "idle_window_seconds": w1 - w0,
            "idle_cpu_seconds": c1 - c0,
            "idle_polls_in_window": polls,
            "idle_cpu_ms_per_poll": 1000 * (c1 - c0) / max(polls, 1),
            "idle_core_share": share,
            "idle_rss_max": rss_idle,
            "floor_cpu_ms_per_session": floor,
            "floor_paced_sessions_per_second": rate,
            "floor_paced_cpu_ms_per_session": paced,
            "rss_per_added_account": per_account,
            "rss_per_account_overall": rss_idle / args.idle_accounts,
            "idle_runs": idle_runs,
            "machine_before": before,
            "machine_after": after,
            "targets": {
                "first_cycle_le_5s": cycle <= 5.0,
                "idle_lt_5pct_core": share < 0.05,
            },
        }
        loop = os.environ.get("POP3BRIDGE_EVENT_LOOP", "")
        # `run`'s own choice when the variable is unset (bridge.cli.UVLOOP_BY_DEFAULT).
        default = ("uvloop" if has_module("uvloop") else "asyncio") + " (default)"
        data["event_loop"] = loop or default
        name = "many_accounts" + ("_tls" if args.tls else "") + (f"_{loop}" if loop else "")
        name += "_quick" if args.quick else ""
        name += "_idle" if args.idle_only else ""
        path = write_results(name, data)
        print_table(
            f"Many accounts ({'POP3S' if args.tls else 'POP3'}, Dovecot {args.dovecot}, "
            f"concurrency {args.concurrency or 'default'})",
            ["measure", "value"],
            [
                [
                    f"first full cycle, {args.accounts} accounts, {total} messages, "
                    f"{receivers[0]} receiver (s)",
                    cycle,
                ],
                ["  bridge CPU in it (s)", cpu_cycle],
                [
                    f"idle, {args.idle_accounts} accounts at {args.interval:g} s (% of one core)",
                    100 * share,
                ],
                ["  polls in the window", polls],
                ["  CPU per idle poll (ms)", data["idle_cpu_ms_per_poll"]],
                ["  RSS (MB)", rss_idle / 1e6],
                ["RSS per added idle account (kB)", per_account / 1e3],
                *(
                    [f"floor: minimal {k} client, CPU per idle session (ms)", v]
                    for k, v in floor.items()
                ),
                *(
                    [f"  paced at the idle phase's {rate:.0f} sessions/s, {k} (ms)", v]
                    for k, v in paced.items()
                ),
            ],
        )
        print(
            f"\nfirst cycle <= 5 s ({receivers[0]}): {'met' if cycle <= 5 else 'NOT met'}; "
            f"idle < 5% of a core: "
            f"{'met' if share < 0.05 else 'NOT met'}\n"
            f"machine: {before['nproc']} x {before['cpu']}; load {before['loadavg']} -> "
            f"{after['loadavg']}\nresults: {path}"
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

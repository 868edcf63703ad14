"""Proxy: the same POP3 work direct to Dovecot, through nginx's mail proxy, through ours.

    python bench/proxy.py [--messages 2000] [--sequential 300] [--sessions 500]
                          [--rounds 3] [--quick]

Contenders, alternated every round (plain POP3 on loopback, USER/PASS):

- ``direct``: Dovecot itself.
- ``nginx``: Debian nginx 1.22 + libnginx-mod-mail, one worker, routed by a tiny aiohttp
  auth_http responder (`bench/_nginx.py`).
- ``pop3bridge proxy``: a subprocess from a `proxy:` config section, when that command exists
  in this checkout (it is being built in parallel; absent, it is reported as not measured).

Workloads: (1) RETR of the whole mailbox (2,000 ~5 KB messages) with a client that pipelines
every RETR on one connection; (2) RETR of the first `--sequential` messages with poplib, one
command at a time (through nginx this is slow, so fewer messages keep the run short; msg/s
stays comparable); (3) `--sessions` concurrent sessions sending 20 commands each, one at a
time (`bench/_loadgen.py`, its own process): commands/s and p50/p99 latency, "added" being the
difference to direct in the same round; (4) proxy RSS growth while one client RETRs a 50 MB
message (sampled every 10 ms).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yaml
from _clients import poplib_sequential, raw_pipelined
from _harness import (
    Contender,
    Sample,
    alternate,
    fill_mailbox,
    machine,
    print_table,
    private_dovecot,
    summarize,
    write_results,
)
from _nginx import AuthResponder, NginxMailProxy

from bridge.testing.samples import big_message, generate_messages
from tests.support.dovecot import DovecotServer, DovecotUser, free_port

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent

# 500 sessions of one user from one IP: Dovecot's defaults (100 processes, 10 sessions per
# user and IP) would refuse most of them, which would measure Dovecot's limits, not proxies.
_LIMITS = """
default_process_limit = 1200
default_client_limit = 5000
mail_max_userip_connections = 1200
service pop3-login {
  service_count = 0
  process_min_avail = 2
}
"""


class _Target:
    """Something a POP3 client can connect to, with an RSS reading for the proxy's process."""

    def __init__(
        self,
        name: str,
        port: int,
        rss: Callable[[], int] | None,
        cpu: Callable[[], float] | None = None,
    ) -> None:
        self.name, self.port, self.rss, self.cpu = name, port, rss, cpu


def _timed(t: _Target, work: Callable[[], float], count: int) -> Sample:
    """Run `work` (returns seconds) as one sample; with the proxy's CPU time per item if known."""
    cpu0 = t.cpu() if t.cpu is not None else 0.0
    seconds = work()
    extra = {}
    if t.cpu is not None:
        extra["proxy_cpu_us_per_item"] = 1e6 * (t.cpu() - cpu0) / count
    return Sample(seconds, count, extra)


class BridgeProxy:
    """`pop3bridge proxy` from a generated config, if this checkout has the command."""

    def __init__(
        self,
        upstream_port: int,
        work: Path,
        profile: Path | None = None,
        *,
        source: Path | None = None,
        name: str = "proxy",
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        cfg = {
            "proxy": {
                "listeners": [{"name": "bench", "host": "127.0.0.1", "port": self.port}],
                "upstream": {"host": "127.0.0.1", "port": upstream_port, "tls": "none"},
            },
            "ops": {"enabled": False},
            "logging": {"format": "json", "level": "WARNING"},
        }
        self.config = work / f"{name}.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.log = open(work / f"{name}.log", "wb")  # noqa: SIM115
        cmd = [str(VENV_BIN / "pop3bridge"), "proxy", "--config", str(self.config)]
        if profile is not None:
            cmd = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(profile), *cmd]
        env = {**os.environ, **(env or {})}
        if source is not None:
            # Another tree's `bridge` package comes first on the path (a before/after pair).
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pop3bridge proxy exited: {(work / f'{name}.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"+OK"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("pop3bridge proxy did not listen within 15 s")

    def rss(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def cpu(self) -> float:
        """CPU seconds the proxy has run, in ns resolution (schedstat), not 10 ms ticks."""
        try:
            return int(Path(f"/proc/{self.proc.pid}/schedstat").read_text().split()[0]) / 1e9
        except OSError:  # pragma: no cover - not Linux
            times = psutil.Process(self.proc.pid).cpu_times()
            return float(times.user + times.system)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def bridge_proxy_available() -> bool:
    return importlib.util.find_spec("bridge.commands.proxy") is not None


def _loadgen(
    port: int, user: DovecotUser, sessions: int, commands: int, interval: float = 0.0
) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "_loadgen.py"),
            "127.0.0.1",
            str(port),
            user.name,
            user.password,
            "--sessions",
            str(sessions),
            "--commands",
            str(commands),
            "--interval",
            str(interval),
        ],
        capture_output=True,
        check=False,
        timeout=600,
    )
    if out.returncode != 0:
        raise SystemExit(f"load generator failed: {out.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    if result["errors"]:
        raise SystemExit(f"load generator saw errors on port {port}: {result['first_errors']}")
    return result


def _rss_during(target: _Target, work: Callable[[], object]) -> tuple[int, int]:
    """(RSS before, peak RSS) of the target's process while `work` runs."""
    assert target.rss is not None
    before = target.rss()
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, target.rss())
            time.sleep(0.01)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        work()
    finally:
        done.set()
        t.join()
    return before, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--sequential", type=int, default=300)
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--commands", type=int, default=20)
    ap.add_argument(
        "--interval",
        type=float,
        default=0.0,
        help="seconds between one session's commands in the concurrent test (0: back to back, "
        "saturating the machine; e.g. 0.2 offers sessions/0.2 commands/s)",
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--big-mb", type=float, default=50)
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, 1 round")
    ap.add_argument(
        "--no-nginx",
        action="store_true",
        help="leave nginx out (its poplib rounds take ~13 s each): for quick proxy-vs-direct steps",
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        action="append",
        help="also run `pop3bridge proxy` with DIR (holding another version's `bridge` package, "
        "e.g. `git archive COMMIT bridge | tar -x -C DIR`) first on PYTHONPATH, as contender "
        "'proxy (DIR's name)', alternated with the others in the same rounds; repeatable",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="run pop3bridge proxy under pyinstrument (pipelined + poplib RETRs), print the "
        "profile and its CPU time per relayed message",
    )
    ap.add_argument(
        "--asyncio",
        action="store_true",
        help="also run `pop3bridge proxy` with POP3BRIDGE_EVENT_LOOP=asyncio (the proxy runs on "
        "uvloop by default when it is installed), as contender 'proxy (asyncio)', alternated "
        "with the others in the same rounds",
    )
    args = ap.parse_args()
    if args.profile:
        return _profile(args)
    if args.quick:
        args.messages, args.sequential, args.sessions, args.rounds, args.big_mb = (
            200,
            20,
            20,
            1,
            5,
        )
    work = Path(tempfile.mkdtemp(prefix="pop3bridge-bench-proxy-"))
    before = machine()
    DovecotServer._config_base = DovecotServer._config  # type: ignore[attr-defined]
    DovecotServer._config = lambda self: self._config_base() + _LIMITS  # type: ignore[method-assign]
    with private_dovecot() as server:
        user = fill_mailbox(server, generate_messages(args.messages, seed=7, size=5000))
        big_user = fill_mailbox(server, [big_message(int(args.big_mb * 1e6), seed=5)])
        targets = [_Target("direct", server.pop3_port, None)]
        # --no-nginx needs no nginx installed: neither it nor its auth responder is started.
        auth = nginx = None
        if not args.no_nginx:
            auth = AuthResponder(server.host, server.pop3_port)
            auth.start()
            nginx = NginxMailProxy(auth.port)
            nginx.start()
            targets.append(_Target("nginx", nginx.port, nginx.rss))
        ours: BridgeProxy | None = None
        ours_note = "not measured: `pop3bridge proxy` is not in this checkout yet"
        if bridge_proxy_available():
            try:
                ours = BridgeProxy(server.pop3_port, work)
                targets.append(_Target("pop3bridge proxy", ours.port, ours.rss, ours.cpu))
                ours_note = ""
            except RuntimeError as exc:
                ours_note = f"not measured: {exc}"
        extra: list[BridgeProxy] = []
        if args.asyncio:
            std = BridgeProxy(
                server.pop3_port, work, name="asyncio", env={"POP3BRIDGE_EVENT_LOOP": "asyncio"}
            )
            extra.append(std)
            targets.append(_Target("proxy (asyncio)", std.port, std.rss, std.cpu))
        for i, source in enumerate(args.baseline or []):
            base = BridgeProxy(server.pop3_port, work, source=source, name=f"baseline{i}")
            extra.append(base)
            targets.append(_Target(f"proxy ({source.name})", base.port, base.rss, base.cpu))
        try:
            results = _run(args, server, user, big_user, targets)
        finally:
            for proc in extra:
                proc.stop()
            if ours is not None:
                ours.stop()
            if nginx is not None and auth is not None:
                nginx.stop()
                auth.stop()
    after = machine()
    data = {
        "benchmark": "proxy",
        "machine_before": before,
        "machine_after": after,
        "pop3bridge_proxy": ours_note or "measured",
        **results,
    }
    path = write_results("proxy" + ("_quick" if args.quick else ""), data)
    _report(data, args)
    if ours_note:
        print(f"\npop3bridge proxy: {ours_note}")
    print(
        f"machine: {before['nproc']} x {before['cpu']}; load {before['loadavg']} -> "
        f"{after['loadavg']}\nresults: {path}"
    )
    return 0


def _run(
    args: argparse.Namespace,
    server: DovecotServer,
    user: DovecotUser,
    big_user: DovecotUser,
    targets: list[_Target],
) -> dict[str, Any]:
    host = server.host

    def pipelined(t: _Target) -> Callable[[], Sample]:
        return lambda: _timed(
            t,
            lambda: raw_pipelined(host, t.port, user.name, user.password, args.messages)[0],
            args.messages,
        )

    def sequential(t: _Target) -> Callable[[], Sample]:
        return lambda: _timed(
            t,
            lambda: poplib_sequential(host, t.port, user.name, user.password, args.sequential)[0],
            args.sequential,
        )

    def sessions(t: _Target) -> Callable[[], Sample]:
        def run() -> Sample:
            r = _loadgen(t.port, user, args.sessions, args.commands, args.interval)
            if t.rss is not None:
                r["rss_after"] = t.rss()
            return Sample(r["seconds"], r["commands"], r)

        return run

    print(f"pipelined RETR of {args.messages} messages")
    pipe = alternate([Contender(t.name, pipelined(t)) for t in targets], args.rounds)
    print(f"poplib, RETR of {args.sequential} messages one at a time")
    seq = alternate([Contender(t.name, sequential(t)) for t in targets], args.rounds)
    paced = f", one every {args.interval:g} s" if args.interval else ", back to back"
    print(f"{args.sessions} concurrent sessions x {args.commands} commands{paced}")
    conc = alternate([Contender(t.name, sessions(t)) for t in targets], args.rounds)

    big: dict[str, Any] = {}
    for t in targets:
        if t.rss is None:
            continue
        growth = []
        for _ in range(args.rounds):
            b, p = _rss_during(
                t, lambda t=t: poplib_sequential(host, t.port, big_user.name, big_user.password, 1)
            )
            growth.append(p - b)
        big[t.name] = {"rss_growth_bytes": statistics.median(growth), "samples": growth}
        print(f"  50 MB RETR through {t.name}: RSS growth {statistics.median(growth) / 1e6:.1f} MB")

    def lat(name: str, key: str) -> float:
        return statistics.median(s.extra[key] for s in conc[name])

    concurrent: dict[str, Any] = {}
    for name in conc:
        concurrent[name] = {
            **summarize(conc[name]),
            "p50_ms": lat(name, "p50_ms"),
            "p99_ms": lat(name, "p99_ms"),
            # Added latency per round (same round, so the same background load), then median.
            "added_p50_ms": statistics.median(
                s.extra["p50_ms"] - d.extra["p50_ms"]
                for s, d in zip(conc[name], conc["direct"], strict=True)
            ),
            "added_p99_ms": statistics.median(
                s.extra["p99_ms"] - d.extra["p99_ms"]
                for s, d in zip(conc[name], conc["direct"], strict=True)
            ),
            "rss_after": statistics.median(s.extra.get("rss_after", 0) for s in conc[name]),
        }
    return {
        "messages": args.messages,
        "sequential_messages": args.sequential,
        "sessions": args.sessions,
        "commands_per_session": args.commands,
        "interval": args.interval,
        "pipelined": {k: summarize(v) for k, v in pipe.items()},
        "sequential": {k: summarize(v) for k, v in seq.items()},
        "concurrent": concurrent,
        "big_retr": big,
        "big_retr_bytes": int(args.big_mb * 1e6),
    }


def _profile(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="pop3bridge-bench-proxy-"))
    out = work / "profile.txt"
    with private_dovecot() as server:
        user = fill_mailbox(server, generate_messages(args.messages, seed=7, size=5000))
        ours = BridgeProxy(server.pop3_port, work, profile=out)
        proc = psutil.Process(ours.proc.pid)
        cpu0 = sum(proc.cpu_times()[:2])
        pipelined = sequential = 0
        for _ in range(5):
            raw_pipelined(server.host, ours.port, user.name, user.password, args.messages)
            pipelined += args.messages
            poplib_sequential(server.host, ours.port, user.name, user.password, args.sequential)
            sequential += args.sequential
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        ours.stop()
    relayed = pipelined + sequential
    print(out.read_text() if out.exists() else "(no profile written)")
    print(
        f"pop3bridge proxy (under the profiler): {cpu:.2f} CPU s for {relayed} relayed ~5 KB "
        f"messages = {1000 * cpu / relayed:.3f} ms each"
    )
    return 0


def _report(data: dict[str, Any], args: argparse.Namespace) -> None:
    pipe, seq, conc = data["pipelined"], data["sequential"], data["concurrent"]
    rows = []

    def cpu(block: dict[str, Any]) -> str:
        key = "proxy_cpu_us_per_item"
        values = [e[key] for e in block["extra"] if key in e]
        return f"{statistics.median(values):.1f}" if values else "-"

    for name in pipe:
        rows.append(
            [
                name,
                pipe[name]["median_rate"],
                f"{pipe[name]['median_rate'] / pipe['direct']['median_rate']:.2f}",
                cpu(pipe[name]),
                seq[name]["median_rate"],
                f"{seq[name]['median_rate'] / seq['direct']['median_rate']:.2f}",
                cpu(seq[name]),
                conc[name]["median_rate"],
                conc[name]["p50_ms"],
                conc[name]["p99_ms"],
                f"{conc[name]['added_p99_ms']:+.2f}",
                f"{data['big_retr'][name]['rss_growth_bytes'] / 1e6:.1f}"
                if name in data["big_retr"]
                else "-",
            ]
        )
    print_table(
        "Proxy (msg/s, commands/s, ms; medians of rounds)",
        [
            "target",
            "pipelined msg/s",
            "x direct",
            "proxy CPU us/msg",
            "poplib msg/s",
            "x direct",
            "proxy CPU us/msg",
            f"{args.sessions} sess cmd/s",
            "p50 ms",
            "p99 ms",
            "added p99",
            "RSS +MB 50MB RETR",
        ],
        rows,
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

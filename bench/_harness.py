"""What every benchmark shares: a private Dovecot, a filled mailbox, alternating rounds, results.

The Dovecot is the one the test suite starts (`tests.support.dovecot.DovecotServer`, imported,
not copied), so a benchmark measures the same server the tests trust. Contenders run
alternately (A B C A B C ...) so a burst of load from the other work on this shared machine
hits every contender about equally; the report gives medians, the spread between rounds and
the load average before and after, because a ratio without its noise is not worth quoting.
"""

from __future__ import annotations

import compileall
import contextlib
import functools
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
# POP3BRIDGE_BENCH_RESULTS redirects results (the smoke test keeps the repository clean).
RESULTS = Path(os.environ.get("POP3BRIDGE_BENCH_RESULTS") or ROOT / "bench" / "results")
if str(ROOT) not in sys.path:
    # `tests.support` is a plain directory on the repository root, like under pytest.
    sys.path.insert(0, str(ROOT))

from tests.support.certs import make_test_certs  # noqa: E402
from tests.support.dovecot import DovecotServer, DovecotUser, dovecot_available  # noqa: E402

__all__ = [
    "ROOT",
    "Contender",
    "Sample",
    "alternate",
    "fill_mailbox",
    "machine",
    "print_table",
    "private_dovecot",
    "summarize",
    "write_results",
]


@dataclass
class Sample:
    """One run of one contender: `count` items (messages, commands) in `seconds`."""

    seconds: float
    count: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Contender:
    """`cpu` says whose CPU time is the contender's: "children" (a subprocess: its user+system
    time from getrusage), "self" (runs in this process: process_time) or "reported" (the
    sample's own `extra["cpu_s"]`, e.g. a process tree measured by bench/_tree.py)."""

    name: str
    run: Callable[[], Sample]
    note: str = ""
    cpu: str = "children"


@contextlib.contextmanager
def private_dovecot(
    server_class: type[DovecotServer] = DovecotServer, root: Path | None = None
) -> Iterator[DovecotServer]:
    """A private Dovecot for one benchmark; `server_class` and `root` let a bench tune it."""
    ok, why = dovecot_available()
    if not ok:
        raise SystemExit(f"benchmark needs Dovecot: {why}")
    certs_dir = Path(tempfile.mkdtemp(prefix="pop3bridge-bench-certs-"))
    server = server_class(make_test_certs(certs_dir), root=root)
    try:
        server.start()
        yield server
    finally:
        server.close()
        shutil.rmtree(certs_dir, ignore_errors=True)


def fill_mailbox(server: DovecotServer, messages: Sequence[bytes]) -> DovecotUser:
    """A new user holding `messages`. Files are written directly (no fsync per message: the
    suite's `deliver` fsyncs each one, which on this disk would dominate the set-up time)."""
    user = server.add_user()
    new = user.maildir / "new"
    uid, gid = os.stat(user.maildir).st_uid, os.stat(user.maildir).st_gid
    base = time.time_ns()
    for i, raw in enumerate(messages):
        # Names sort in delivery order, so Dovecot numbers the messages as given.
        path = new / f"{base + i:020d}.P{os.getpid()}Q{i}.pop3bridge-bench"
        path.write_bytes(raw)
        os.chown(path, uid, gid)
    return user


def alternate(
    contenders: Sequence[Contender], rounds: int, *, log: Callable[[str], None] = print
) -> dict[str, list[Sample]]:
    """Run every contender once per round, in the same order each round."""
    samples: dict[str, list[Sample]] = {c.name: [] for c in contenders}
    for r in range(rounds):
        for c in contenders:
            cpu0 = _cpu(c.cpu)
            s = c.run()
            if c.cpu != "reported":
                s.extra["cpu_s"] = _cpu(c.cpu) - cpu0
            samples[c.name].append(s)
            log(
                f"  round {r + 1}/{rounds} {c.name:28s} {s.rate:10.1f}/s  ({s.seconds:.3f} s, "
                f"CPU {1000 * s.extra['cpu_s'] / max(s.count, 1):.3f} ms each)"
            )
    return samples


def _cpu(whose: str) -> float:
    """CPU seconds (user + system) of this process, or of every waited-for descendant."""
    if whose == "reported":
        return 0.0
    if whose == "self":
        return time.process_time()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summarize(samples: Sequence[Sample]) -> dict[str, Any]:
    """Median rate and the spread between rounds ((max - min) / median) as the noise figure."""
    rates = [s.rate for s in samples]
    med = statistics.median(rates)
    return {
        "median_rate": med,
        "min_rate": min(rates),
        "max_rate": max(rates),
        "spread_pct": 100.0 * (max(rates) - min(rates)) / med if med else 0.0,
        "median_seconds": statistics.median(s.seconds for s in samples),
        # CPU per item is far less sensitive to the other load on a shared machine than rates.
        "median_cpu_ms_per_item": statistics.median(
            1000 * s.extra.get("cpu_s", 0.0) / max(s.count, 1) for s in samples
        ),
        "rounds": len(rates),
        "rates": rates,
        "extra": [s.extra for s in samples],
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "loadavg": list(os.getloadavg()),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "uvloop_installed": has_module("uvloop"),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def has_module(module: str) -> bool:
    """Whether `module` imports here (optional extras such as uvloop)."""
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a helper daemon (nginx and the like), killing it if it ignores SIGTERM."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in header]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print(
            "  "
            + "  ".join(
                v.rjust(w) if i else v.ljust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


@dataclass
class OnceRun:
    """One bridge process whose webhooks all arrived verified (see `run_once`, `run_until`)."""

    seconds: float  # exec to exit
    to_first_post_s: float  # exec until the receiver saw the first POST
    after_last_post_s: float  # the last POST until the process had exited
    first_post_at: float
    last_post_at: float
    cpu_s: float = 0.0  # user + system of the whole process tree (parse workers included)


TREE = Path(__file__).resolve().parent / "_tree.py"


@functools.cache
def compiled_bridge(tree: Path | None = None) -> None:
    """Write the .pyc files of the `bridge` package a benchmark runs (`tree`'s, or the one this
    interpreter imports), once per process, before any timed run.

    A deployment runs compiled modules (pip writes them; the Dockerfile runs `compileall`), but
    with `PYTHONDONTWRITEBYTECODE=1` in the environment, as on the team's machine, a checkout
    or `git archive` without `__pycache__` compiled its ~100 modules on every run: `once` of
    2,000 messages spent 1.822 vs 1.568 s of main-process CPU (0.127 ms a message, 6 alternated
    pairs, 3 Dec 2026) and 5.6 vs 4.8 G instructions. bench/startup.py lets its warm-up write
    them for the same reason. Stale .pyc (a copied tree) are rewritten; an unwritable tree is
    left as it is."""
    if tree is not None:
        package = tree / "bridge"
    else:
        spec = importlib.util.find_spec("bridge")
        if spec is None or spec.origin is None:
            return
        package = Path(spec.origin).parent
    compileall.compile_dir(package, quiet=2)


def _bridge_command(
    config: Path, command: str, loop: str | None, tree: Path | None
) -> tuple[list[str], dict[str, str]]:
    """`loop` None: the command's own default in that tree (bridge.cli.UVLOOP_BY_DEFAULT:
    uvloop for `run` when installed, asyncio for `once`), as a deployment runs it."""
    compiled_bridge(tree)
    env = dict(os.environ)
    env.pop("POP3BRIDGE_EVENT_LOOP", None)
    if loop is not None:
        env["POP3BRIDGE_EVENT_LOOP"] = loop
    argv = [str(Path(sys.executable).parent / "pop3bridge"), command, "--config", str(config)]
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
        # -P: `-m` would otherwise put the working directory (this checkout) first on
        # sys.path, and the "baseline" would run this tree's bridge package.
        argv = [sys.executable, "-P", "-m", "bridge", command, "--config", str(config)]
    return argv, env


def _wrapped(argv: list[str], report: Path) -> list[str]:
    """`argv` under bench/_tree.py, which reports the CPU of the whole process tree."""
    return [sys.executable, "-S", "-I", str(TREE), str(report), "--", *argv]


def _check(receiver: Any, before: int, expected: int, rc: int, stderr: bytes, what: str) -> Any:
    got = receiver.requests[before:]  # the nginx receiver verifies here, after the clock
    verified = {r.msg_id for r in got if r.verified and r.status and 200 <= r.status < 300}
    if rc != 0 or len(verified) != expected or receiver.invalid:
        raise SystemExit(
            f"pop3bridge {what} failed: exit {rc}, {len(verified)} of {expected} "
            f"verified, {receiver.invalid} invalid\n{stderr.decode()[-2000:]}"
        )
    return got


def run_once(
    config: Path,
    receiver: Any,
    expected: int,
    *,
    loop: str | None = None,
    tree: Path | None = None,
) -> OnceRun:
    """Run `pop3bridge once --config CONFIG` and check that `expected` distinct webhooks
    arrived at `receiver` (a `tests.support.receiver.ThreadedReceiver` or a
    `bench._webhook_nginx.NginxReceiver`) verified, with exit 0; anything else ends the
    benchmark, since a slow wrong answer is no result. `tree` runs the `bridge` package of
    another checkout (a baseline) with this interpreter, on `loop` (None: the tree's own
    default for `once`, see `_bridge_command`). The wall time and CPU come from
    bench/_tree.py: the process tree's, parse workers included."""
    argv, env = _bridge_command(config, "once", loop, tree)
    report = config.with_suffix(".tree.json")
    before = len(receiver.requests)
    started_at = time.time()  # the receivers stamp arrivals with time.time()
    proc = subprocess.run(_wrapped(argv, report), capture_output=True, env=env, check=False)
    got = _check(receiver, before, expected, proc.returncode, proc.stderr, "once")
    done = json.loads(report.read_text())
    first, last = min(r.at for r in got), max(r.at for r in got)
    return OnceRun(
        done["seconds"],
        first - started_at,
        done["exited_at"] - last,
        first,
        last,
        done["cpu_s"],
    )


def run_until(
    config: Path,
    receiver: Any,
    expected: int,
    *,
    loop: str | None = None,
    timeout: float = 600.0,
    tree: Path | None = None,
) -> OnceRun:
    """Run `pop3bridge run --config CONFIG` (the daemon) until `expected` webhooks arrived,
    then stop it with SIGTERM; `seconds` is exec to the last arrival (the drain; the shutdown
    that follows is not part of it). Arrivals are polled while the clock runs, through the
    receiver's `count()` when it has one (the nginx receiver: no verification then).
    Verification as in `run_once`, after the clock; `tree` as there."""
    argv, env = _bridge_command(config, "run", loop, tree)
    report = config.with_suffix(".tree.json")
    before = _arrivals(receiver)
    started_at = time.time()
    proc = subprocess.Popen(
        _wrapped(argv, report), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    deadline = time.monotonic() + timeout
    while _arrivals(receiver) - before < expected and proc.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    got = _check(receiver, before, expected, proc.returncode, stderr, "run")
    done = json.loads(report.read_text())
    first, last = min(r.at for r in got), max(r.at for r in got)
    return OnceRun(
        last - started_at,
        first - started_at,
        done["exited_at"] - last,
        first,
        last,
        done["cpu_s"],
    )


def _arrivals(receiver: Any) -> int:
    count = getattr(receiver, "count", None)
    return int(count()) if callable(count) else len(receiver.requests)


def poller_config(
    path: Path,
    db: Path,
    receiver: Any,
    accounts: Sequence[dict[str, Any]],
    *,
    webhook: dict[str, Any] | None = None,
    poller: dict[str, Any] | None = None,
) -> Path:
    """Write the configuration every poller benchmark runs with to `path`: one SQLite state
    file, one webhook "main" pointing at `receiver` (plus `webhook` keys), no ops endpoint,
    warnings only. Returns `path`."""
    cfg: dict[str, Any] = {
        "state": {"url": f"sqlite:///{db}"},
        "webhooks": [
            {"name": "main", "url": receiver.url, "secret": receiver.secret, **(webhook or {})}
        ],
        "accounts": list(accounts),
        "ops": {"enabled": False},
        "logging": {"format": "json", "level": "WARNING"},
    }
    if poller:
        cfg["poller"] = poller
    path.write_text(yaml.safe_dump(cfg))
    return path

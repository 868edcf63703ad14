"""Start-up of `pop3bridge once`: exec until the first POST arrives, for one account (issue 17).

    python bench/startup.py [--rounds 7] [--messages 20] [--parse-workers 1]
                            [--baseline DIR ...] [--top 25] [--instructions N] [--floor]
                            [--loop default|asyncio|uvloop ...]

Each round runs `python -m bridge once --config FILE` against a private Dovecot holding one
mailbox of `--messages` small messages (one account, plain POP3 on loopback; each run gets a
copy of a migrated, empty SQLite state file, as cron's runs find theirs, so every run finds
the mailbox new; `--fresh-state`: no state file, the first start) and a webhook receiver in this
process that stamps each arrival with `time.time()` and verifies its signature with the
`standardwebhooks` library. Reported per tree, medians of the rounds:

- **exec -> first POST**: from just before `exec` to the receiver seeing the first request.
- **phases** of that time, from a probe that runs the real command (`bridge.cli.main`) in the
  same interpreter with an audit hook (the first POST's connect: aiohttp connects its own
  socket, which raises `socket.connect` on asyncio and uvloop alike) and wrapped functions (the
  configuration's `load`, the POP3 client's `connect` and first RETR: uvloop's own connects
  raise no audit event), so nothing is imported earlier or in another order than without it:
  *interpreter* (exec until the probe's first line: the interpreter and `site`), *imports*
  (until the configuration starts loading: the CLI, the command's module and what it imports),
  *config* (`load`: reading, validating), *store* (until the POP3 connect: the runtime's lazy
  imports, opening and migrating the store, the sender, the parse workers' launch), *connect*
  (until the first RETR is sent: TCP, greeting, login, UIDL), *first RETR* (until the first
  message is recorded in the outbox) and *first POST* (until its arrival: the parse and the
  signed request).
- *main CPU*: the CPU time (user + system, all threads) the bridge's own process had used when
  it opened the connection for the first POST. On this shared 2-core machine it is the figure
  least disturbed by other load: wall times there follow the load average.
- *warm*: from exec until the parse worker was launched (`ParsePool.warm`: the first UIDL
  listing with new mail, or the first body to build).
- *workers up*: from exec until the parse worker first answered: its warm-up job on an
  executor pool, the first batch on a pool of pipe workers (then the first body's parse is
  in it); "-" with `--parse-workers 0`.
- *CPU ms*: the CPU time of the whole run (the process and its parse workers, forkserver
  included) on its 20 messages.
- with `--top N`, one extra run of each tree under `python -X importtime`: the modules
  imported and the N costliest imports (self time, with their cumulative time).
- with `--instructions N`, N more runs of each tree under `valgrind --tool=callgrind`: the
  instructions the bridge's own process executes from exec until it opens the connection for
  the first POST (the collector off, the process ended there; the forked parse worker, a
  child, is not counted). Unlike the times, this does not move with the machine's load, so it
  decides between two trees on a shared machine (it differs by ~0.1 % between runs).
- with `--floor`, each round also times the libraries alone: `python -c "import asyncio,
  pydantic_settings, yaml, aiohttp, sqlite3, orjson, email.feedparser"` with the collector
  off, and without aiohttp's CA-bundle load (the bridge defers it: bridge/delivery/client.py).
  What the interpreter and those imports cost is the floor no change to the bridge's own code
  goes under; with `--instructions`, their instructions too.

- with `--loop L` (repeatable), every tree runs on each loop L named (`POP3BRIDGE_EVENT_LOOP`;
  `default`: unset, the tree's own default for `once`), as contenders `TREE:L`.

Trees alternate within a round (A B A B ...), so load from the shared machine hits both alike;
say the load (printed) next to any figure. A DIR is another checkout (e.g. an export of main):
it runs with `PYTHONPATH=DIR` on this interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from _harness import fill_mailbox, poller_config, private_dovecot

from bridge.store import open_store
from bridge.testing.samples import generate_messages
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.receiver import ThreadedReceiver

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("interpreter", "imports", "config", "store", "connect", "first RETR", "first POST")
# `--loop`: the tree's own default for `once` (POP3BRIDGE_EVENT_LOOP unset), or a named loop.
DEFAULT_LOOP = "default"
LOOPS = (DEFAULT_LOOP, "asyncio", "uvloop")

# Runs `pop3bridge once` as `python -m bridge` would, recording when each phase ends. The
# audit hook sees the first POST's connect; `load`, the POP3 client's connect and RETR and the
# parse pool are wrapped when their modules are first imported (an import hook), so the probe
# changes no import order.
PROBE = r"""
import sys, time
_T = {"main": time.time(), "main_cpu": time.process_time()}
_C = {}  # the same marks in this process's CPU time
import json, os
_HOOK = int(os.environ["STARTUP_HOOK_PORT"])

def _audit(event, args):
    # aiohttp opens its connections through its own socket and `loop.sock_connect`, on
    # asyncio and uvloop alike, so this event marks the first POST's connect on either loop.
    if event == "socket.connect" and "post_cpu" not in _T:
        addr = args[1]
        if isinstance(addr, tuple) and len(addr) >= 2 and addr[1] == _HOOK:
            _T["post_cpu"] = time.process_time()  # this process's CPU, all its threads

sys.addaudithook(_audit)

def _wrap_load(module):
    inner = module.load
    def load(*a, **k):
        _T.setdefault("config_start", time.time())
        _C.setdefault("config_start", time.process_time())
        try:
            return inner(*a, **k)
        finally:
            _T.setdefault("config_end", time.time())
            _C.setdefault("config_end", time.process_time())
    module.load = load

def _wrap_client(module):
    # The POP3 connect, as the client starts it: uvloop connects in libuv, which raises no
    # `socket.connect` audit event, so the mark is the client's own, the same on both loops.
    cls = module.POP3Client
    connect = cls.connect.__func__
    async def _connect(klass, *a, **k):
        _T.setdefault("connect", time.time())
        _C.setdefault("connect", time.process_time())
        return await connect(klass, *a, **k)
    cls.connect = classmethod(_connect)
    inner = cls._encode
    def _encode(self, command):
        data = inner(self, command)
        if "retr" not in _T and data[:4].upper() == b"RETR":
            _T["retr"] = time.time()
            _C["retr"] = time.process_time()
        return data
    cls._encode = _encode

def _wrap_pool(module):
    # When the parse worker was launched (`warm`, or the first body), and when it first
    # answered: a warm-up job (pools on an executor) or the first batch (pools on pipes).
    pool = module.ParsePool
    warm = pool.warm
    def _warm(self, *a, **k):
        _T.setdefault("warm", time.time())
        return warm(self, *a, **k)
    pool.warm = _warm
    if hasattr(module, "_ignore_result"):
        inner = module._ignore_result
        def _ignore_result(future):
            _T.setdefault("workers", time.time())
            return inner(future)
        module._ignore_result = _ignore_result
    elif hasattr(module, "_Worker"):
        call = module._Worker.call
        async def _call(self, *a, **k):
            answer = await call(self, *a, **k)
            _T.setdefault("workers", time.time())
            return answer
        module._Worker.call = _call

_WRAP = {
    "bridge.commands._common": _wrap_load,
    "bridge.pop3.client": _wrap_client,
    "bridge.outbox.pool": _wrap_pool,
}

import importlib.abc, importlib.machinery

class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _WRAP:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader, patch = spec.loader, _WRAP[name]
        run = loader.exec_module
        def exec_module(module):
            run(module)
            patch(module)
        loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Finder())

import atexit, sqlite3
def _stamps():
    # The outbox's first row: the first message fetched and recorded (read back at exit).
    try:
        db = sqlite3.connect(os.environ["STARTUP_DB"])
        row = db.execute("SELECT min(created_at) FROM outbox").fetchone()
        if row and row[0] is not None:
            _T["recorded"] = float(row[0])
        db.close()
    except Exception as exc:  # a schema change: say so instead of guessing
        _T["recorded_error"] = repr(exc)
    _T["cpu"] = _C
    with open(os.environ["STARTUP_STAMPS"], "w") as f:
        json.dump(_T, f)
atexit.register(_stamps)

sys.argv = ["pop3bridge", *sys.argv[1:]]
from bridge.cli import main
main()
"""


# Runs `pop3bridge once` to the first POST's connect under callgrind, with the collector off
# (its collections depend on allocation history, not on the code) and the process ended there
# with its own status (`REACHED`): a run that ends any other way never reached that connect,
# and its count would be of something else.
REACHED = 97
COUNTED = r"""
import gc, os, sys
gc.disable()
_HOOK = int(os.environ["STARTUP_HOOK_PORT"])

def _audit(event, args):
    if event == "socket.connect":  # aiohttp's, on asyncio and uvloop alike (see PROBE)
        addr = args[1]
        if isinstance(addr, tuple) and len(addr) >= 2 and addr[1] == _HOOK:
            os._exit(int(os.environ["STARTUP_REACHED"]))

sys.addaudithook(_audit)
sys.argv = ["pop3bridge", *sys.argv[1:]]
from bridge.cli import main
main()
"""

# The libraries `once` needs before its first POST, alone (`--floor`). The CA bundle is what
# aiohttp's import would load and the bridge defers (bridge/delivery/client.py).
FLOOR = (
    "import gc; gc.disable(); "
    "import asyncio, pydantic_settings, yaml, aiohttp, sqlite3, orjson, email.feedparser"
)
FLOOR_ENV = {"SSL_CERT_FILE": "/nonexistent", "SSL_CERT_DIR": "/nonexistent"}


def callgrind_total(path: Path) -> int:
    """The instruction count a callgrind output file ends with."""
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no instruction total in {path}")


def counted(
    command: list[str], env: dict[str, str], cwd: Path, out: Path, *, status: int = 0
) -> int:
    """Instructions `command`'s own process executed under callgrind (not its children's),
    which must end with exit `status`."""
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    _, stderr = proc.communicate()
    if proc.returncode != status:
        raise SystemExit(
            f"{command[:2]} under callgrind: exit {proc.returncode}, not {status}"
            f"\n{stderr[-3000:]!r}"
        )
    return callgrind_total(out.with_name(f"{out.name}.{proc.pid}"))


def timed_floor() -> tuple[float, float]:
    """(wall s, CPU s) of the libraries' import alone (`--floor`)."""
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    subprocess.run([sys.executable, "-c", FLOOR], env={**os.environ, **FLOOR_ENV}, check=True)
    wall = time.time() - started
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    return wall, cpu


@dataclass
class Run:
    to_first_post: float
    phases: dict[str, float]
    cpu: float


async def _migrated(path: Path) -> None:
    store = open_store(f"sqlite:///{path}")
    try:
        await store.migrate()
    finally:
        await store.close()


class Bench:
    def __init__(
        self,
        server: DovecotServer,
        user: DovecotUser,
        work: Path,
        workers: int,
        *,
        fresh_state: bool = False,
    ) -> None:
        self.server, self.user, self.work, self.workers = server, user, work, workers
        self.receiver = ThreadedReceiver(default_status=204)
        self.receiver.start()
        self.template: Path | None = None
        if not fresh_state:
            # What cron meets: a state file that exists, its schema current, none of this
            # mailbox's messages seen yet (a copy per run).
            self.template = work / "template.db"
            asyncio.run(_migrated(self.template))

    def close(self) -> None:
        self.receiver.close()

    def config(self) -> tuple[Path, Path]:
        run = Path(tempfile.mkdtemp(dir=self.work))
        db = run / "state.db"
        if self.template is not None:
            shutil.copyfile(self.template, db)
        path = poller_config(
            run / "config.yaml",
            db,
            self.receiver,
            [self.server.plain_account(self.user, "bench")],
            poller={"parse_workers": self.workers},
        )
        return path, db

    def env(self, tree: Path, db: Path, loop: str = DEFAULT_LOOP) -> dict[str, str]:
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "STARTUP_HOOK_PORT": str(urlsplit(self.receiver.url).port),
            "STARTUP_DB": str(db),
            "STARTUP_STAMPS": str(db.with_suffix(".stamps.json")),
            "STARTUP_REACHED": str(REACHED),
        }
        env.pop("POP3BRIDGE_EVENT_LOOP", None)
        if loop != DEFAULT_LOOP:
            env["POP3BRIDGE_EVENT_LOOP"] = loop
        # Installed packages carry their .pyc files; let the warm-up run write this tree's.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def instructions(self, tree: Path, loop: str = DEFAULT_LOOP) -> int:
        """Instructions of `once`'s own process from exec to the first POST's connect."""
        config, db = self.config()
        command = [sys.executable, "-c", COUNTED, "once", "--config", str(config)]
        env = self.env(tree, db, loop)
        return counted(command, env, tree, db.with_name("callgrind.out"), status=REACHED)

    def once(
        self, tree: Path, *, probe: bool, importtime: bool = False, loop: str = DEFAULT_LOOP
    ) -> tuple[Run, str]:
        config, db = self.config()
        stamps = db.with_suffix(".stamps.json")
        env = self.env(tree, db, loop)
        flags = ["-X", "importtime"] if importtime else []
        command = [sys.executable, *flags]
        args = ["once", "--config", str(config)]
        command += ["-c", PROBE, *args] if probe else ["-m", "bridge", *args]
        before = len(self.receiver.requests)
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.time()
        proc = subprocess.run(command, capture_output=True, env=env, cwd=tree, check=False)
        usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        got = self.receiver.requests[before:]
        if proc.returncode != 0 or not got or self.receiver.invalid:
            raise SystemExit(
                f"pop3bridge once failed in {tree}: exit {proc.returncode}, {len(got)} "
                f"requests, {self.receiver.invalid} invalid\n{proc.stderr.decode()[-3000:]}"
            )
        first = min(r.at for r in got)
        cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
        phases: dict[str, float] = {}
        if probe:
            t = json.loads(stamps.read_text())
            if "recorded" not in t:
                raise SystemExit(f"probe could not read the outbox: {t.get('recorded_error')}")
            missing = {"config_start", "connect", "retr", "post_cpu"} - set(t)
            if missing:  # a renamed function or another connect path: say so, not KeyError
                raise SystemExit(f"the probe saw no {sorted(missing)} in {tree} ({loop})")
            marks = [
                started,
                t["main"],
                t["config_start"],
                t["config_end"],
                t["connect"],
                t["retr"],
                t["recorded"],
                first,
            ]
            phases = {name: b - a for name, a, b in zip(PHASES, marks[:-1], marks[1:], strict=True)}
            phases["main CPU"] = t["post_cpu"]
            c = t["cpu"]
            cpu_marks = [
                t["main_cpu"],
                c["config_start"],
                c["config_end"],
                c["connect"],
                c["retr"],
                t["post_cpu"],
            ]
            cpu_phases = ("imports", "config", "store", "connect", "to 1st POST")
            for name, a, b in zip(cpu_phases, cpu_marks[:-1], cpu_marks[1:], strict=True):
                phases[f"cpu {name}"] = b - a
            phases["cpu interpreter"] = t["main_cpu"]
            if "workers" in t:
                phases["workers up"] = t["workers"] - started
            if "warm" in t:
                phases["warm"] = t["warm"] - started
        return Run(first - started, phases, cpu), proc.stderr.decode()


def importtime_top(stderr: str, top: int) -> tuple[int, float, list[tuple[int, int, str]]]:
    """(modules, total ms of the outermost imports, [(self us, cumulative us, name)])."""
    rows: list[tuple[int, int, str]] = []
    total = 0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative, name = line[len("import time:") :].split("|", 2)
        name = name[1:]  # one space, then two per level of nesting
        rows.append((int(self_us), int(cumulative), name))
        if not name.startswith(" "):
            total += int(cumulative)
    costly = sorted(rows, reverse=True)[:top]
    return len(rows), total / 1000, costly


def label(tree: Path, loop: str) -> str:
    """A contender's name in the tables: the tree, and the loop when `--loop` named one."""
    return str(tree) if loop == DEFAULT_LOOP else f"{tree}:{loop}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--parse-workers", type=int, default=1, help="poller.parse_workers")
    parser.add_argument("--baseline", action="append", default=[], type=Path)
    parser.add_argument("--top", type=int, default=25, help="-X importtime list (0: none)")
    parser.add_argument(
        "--fresh-state",
        action="store_true",
        help="a new state file each run (first start: the schema is created, with its fsyncs)",
    )
    parser.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="N",
        help="N runs per tree under callgrind: instructions from exec to the first POST",
    )
    parser.add_argument(
        "--floor", action="store_true", help="also time the libraries' import alone, each round"
    )
    parser.add_argument(
        "--loop",
        action="append",
        choices=LOOPS,
        help="run every tree on this event loop (POP3BRIDGE_EVENT_LOOP), alternated; "
        "repeatable (default: each tree's own default for `once`)",
    )
    args = parser.parse_args()
    loops = list(dict.fromkeys(args.loop or [DEFAULT_LOOP]))
    trees = [
        (tree, loop) for tree in [ROOT, *(p.resolve() for p in args.baseline)] for loop in loops
    ]
    floor: list[tuple[float, float]] = []
    counts: dict[tuple[Path, str], list[int]] = {t: [] for t in trees}
    load0 = os.getloadavg()[0]
    results: dict[tuple[Path, str], list[Run]] = {t: [] for t in trees}
    with private_dovecot() as server, tempfile.TemporaryDirectory() as tmp:
        user = fill_mailbox(server, generate_messages(args.messages))
        bench = Bench(server, user, Path(tmp), args.parse_workers, fresh_state=args.fresh_state)
        try:
            for tree, loop in trees:  # warm the page cache and the .pyc files; not counted
                bench.once(tree, probe=False, loop=loop)
            for _ in range(args.rounds):
                for tree, loop in trees:
                    plain, _ = bench.once(tree, probe=False, loop=loop)
                    probed, _ = bench.once(tree, probe=True, loop=loop)
                    plain.phases = probed.phases
                    results[tree, loop].append(plain)
                if args.floor:
                    floor.append(timed_floor())
            imports = {
                (t, loop): bench.once(t, probe=False, importtime=True, loop=loop)[1]
                for t, loop in trees
            }
            for _ in range(args.instructions):
                for tree, loop in trees:
                    counts[tree, loop].append(bench.instructions(tree, loop))
        finally:
            bench.close()
    load1 = os.getloadavg()[0]
    print(
        f"`pop3bridge once`, 1 account, {args.messages} messages, parse_workers "
        f"{args.parse_workers}, {'new' if args.fresh_state else 'existing'} state file, "
        f"{args.rounds} rounds; load {load0:.1f} -> {load1:.1f}; "
        f"{sys.executable}"
    )
    head = f"{'tree':<28} {'exec->1st POST ms':>17} {'min':>6} {'max':>6} {'CPU ms':>7}"
    print(head + "".join(f" {p:>11}" for p in (*PHASES, "main CPU", "warm", "workers up")))
    for (tree, loop), runs in results.items():
        post = [r.to_first_post * 1000 for r in runs]
        cpu = statistics.median(r.cpu for r in runs) * 1000
        line = (
            f"{label(tree, loop):<28} {statistics.median(post):>17.0f} {min(post):>6.0f} "
            f"{max(post):>6.0f} {cpu:>7.0f}"
        )
        for p in (*PHASES, "main CPU", "warm", "workers up"):
            values = [r.phases[p] for r in runs if p in r.phases]
            line += f" {statistics.median(values) * 1000:>11.1f}" if values else f" {'-':>11}"
        print(line)
    if floor:
        walls = [w * 1000 for w, _ in floor]
        line = f"{'libraries alone (--floor)':<28} {statistics.median(walls):>17.0f} "
        line += f"{min(walls):>6.0f} {max(walls):>6.0f} "
        print(line + f"{statistics.median(c for _, c in floor) * 1000:>7.0f}")
    print("(phases: medians of the probed runs, which run beside the plain ones; their sum")
    print(" need not equal the plain runs' median)")
    print("\nthe bridge's own CPU time (ms, user + system) in each phase, medians; the interpreter")
    print("phase is CPU until the probe's first line, `to 1st POST` runs from the first RETR to")
    print("the first POST's connect:")
    cpu_cols = ("interpreter", "imports", "config", "store", "connect", "to 1st POST")
    print(f"{'tree':<28}" + "".join(f" {p:>11}" for p in cpu_cols))
    for (tree, loop), runs in results.items():
        values = [statistics.median(r.phases[f"cpu {p}"] for r in runs) * 1000 for p in cpu_cols]
        print(f"{label(tree, loop):<28}" + "".join(f" {v:>11.1f}" for v in values))
    if args.instructions:
        print(
            f"\ninstructions from exec to the first POST's connect (callgrind, collector off, "
            f"{args.instructions} runs each, median):"
        )
        for (tree, loop), values in counts.items():
            spread = (max(values) - min(values)) / 2 / statistics.median(values) * 100
            median = statistics.median(values) / 1e6
            print(f"{label(tree, loop):<28} {median:>10.1f} M  (+-{spread:.2f} %)")
        if args.floor:
            with tempfile.TemporaryDirectory() as tmp:
                command = [sys.executable, "-c", FLOOR]
                n = counted(command, {**os.environ, **FLOOR_ENV}, ROOT, Path(tmp) / "floor")
            print(f"{'libraries alone (--floor)':<28} {n / 1e6:>10.1f} M")
    if args.top:
        for (tree, loop), stderr in imports.items():
            count, total, costly = importtime_top(stderr, args.top)
            print(
                f"\n-X importtime, {label(tree, loop)}: {count} imports (main process and "
                f"workers), "
                f"{total:.0f} ms at top level; costliest by self time:"
            )
            print(f"  {'self ms':>8} {'cumul ms':>9}  module")
            for self_us, cumulative, name in costly:
                print(f"  {self_us / 1000:>8.1f} {cumulative / 1000:>9.1f}  {name.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

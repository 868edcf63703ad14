"""What `pop3bridge once` imports: what it runs, and nothing of the other commands (issue 17).

Start-up time is most of a short `once` from cron, and most of it is imports; these tests keep
the lazy structure that bench/startup.py measured from quietly coming undone. They assert on
module names, in fresh interpreters, never on time:

- the command line builds its parser without the configuration, the poller or aiohttp;
- a real `once` run (its POP3 server refusing the connection, so it goes through settings,
  store and poll and exits 1) imports none of the metrics, the ops server, the proxy,
  PostgreSQL, the link server, uvloop or the other commands, and, with nothing recorded and
  nothing waiting in the outbox, not the sender and aiohttp either;
- it runs on asyncio unless `POP3BRIDGE_EVENT_LOOP=uvloop` asks for uvloop;
- what a parse worker's forkserver preloads (`bridge.outbox`) needs neither aiohttp nor
  pydantic, so the workers are up while the bridge is still importing those;
- `once` forks its one parse worker before it imports the configuration, parses new mail in
  it and spawns none, and forks nothing when the environment asks for 0 workers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

# Runs the console script's `main` and writes the names in sys.modules at exit (the CLI ends
# the process with `exit_now`, which runs the atexit hooks).
PROBE = """
import atexit, json, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["pop3bridge", *sys.argv[2:]]
from bridge.cli import main
main()
"""

# Never imported by `once`: (prefix, why it is not needed).
NOT_FOR_ONCE = {
    "prometheus_client": "once exposes no metrics",
    "bridge.ops.metrics": "once exposes no metrics",
    "bridge.ops.server": "no ops endpoint in once",
    "bridge.ops.status": "no ops endpoint in once",
    "bridge.ops.page": "no ops endpoint in once",
    "aiohttp.web": "aiohttp's server side: the ops and link servers, not the sender",
    "asyncpg": "the state URL is SQLite",
    "bridge.store.postgres": "the state URL is SQLite",
    "bridge.proxy": "the POP3 proxy",
    "bridge.attachments.server": "the link server runs under `run`",
    "bridge.demo": "the demo command",
    "bridge.docgen": "the config reference",
    "bridge.testing": "test servers and sample mail",
    "uvloop": "once runs on asyncio unless POP3BRIDGE_EVENT_LOOP says otherwise",
    "multiprocessing": "parse_workers is 0 here",
    "html.parser": "HTML to text, for a message with no text part, in the parse worker",
    "smtplib": "no account has a freshness canary to submit",
    **{
        f"bridge.commands.{name}": "another command"
        for name in (
            "run",
            "peek",
            "demo",
            "probe",
            "dlq",
            "trace",
            "reconcile",
            "replay",
            "accounts",
            "proxy",
            "config",
        )
    },
}


def matching(modules: set[str], prefix: str) -> list[str]:
    return sorted(m for m in modules if m == prefix or m.startswith(prefix + "."))


def run_probe(
    probe: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -c probe *args` from the repo root, without the caller's POP3BRIDGE_ settings."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("POP3BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-c", probe, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**environ, **(env or {})},
        timeout=120,
        check=False,
    )


def fresh_modules(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> set[str]:
    out = tmp_path / "modules.json"
    proc = run_probe(PROBE, str(out), *args, env=env)
    assert out.exists(), proc.stderr
    modules = set(json.loads(out.read_text()))
    modules.add(f"__exit_status__{proc.returncode}")
    modules.add(f"__stdout__{proc.stdout.strip()}")
    return modules


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def config(tmp_path: Path, pop3_port: int, workers: int = 0) -> Path:
    path = tmp_path / "config.yaml"
    data = {
        "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "webhooks": [
            {
                "name": "main",
                "url": "http://127.0.0.1:9/hook",
                "secret": "whsec_" + "a2tr" * 10 + "a2s=",
            }
        ],
        "accounts": [
            {
                "name": "box",
                "host": "127.0.0.1",
                "port": pop3_port,
                "tls": "none",
                "allow_plaintext": True,
                "username": "u",
                "password": "p",
                "webhook": "main",
            }
        ],
        "poller": {"parse_workers": workers},
        "ops": {"enabled": False},
        "logging": {"level": "CRITICAL"},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_once_imports_only_what_it_runs(tmp_path: Path, refusing_port: int) -> None:
    modules = fresh_modules(tmp_path, "once", "--config", str(config(tmp_path, refusing_port)))
    # It really ran: exit 1 for the refused account, after the store and the poller.
    assert "__exit_status__1" in modules, sorted(m for m in modules if m.startswith("__"))
    stdout = next(m for m in modules if m.startswith("__stdout__"))[len("__stdout__") :]
    assert "ConnectionLost" in json.loads(stdout)["accounts"]["box"]["error"]
    for needed in (
        "bridge.commands.once",
        "bridge.config.settings",
        "bridge.store.sqlite",
        "bridge.poller.poll",
        "bridge.pop3.client",
    ):
        assert needed in modules, needed
    # Nothing was recorded and nothing waits in the outbox: the sender is never opened.
    for unneeded in ("bridge.delivery.sender", "aiohttp", "yarl", "tenacity"):
        assert not matching(modules, unneeded), unneeded
    found = {prefix: matching(modules, prefix) for prefix in NOT_FOR_ONCE}
    unexpected = {f"{p} ({NOT_FOR_ONCE[p]})": names for p, names in found.items() if names}
    assert not unexpected


def test_once_runs_on_asyncio_unless_the_environment_says_uvloop(
    tmp_path: Path, refusing_port: int
) -> None:
    pytest.importorskip("uvloop")
    path = str(config(tmp_path, refusing_port))
    default = fresh_modules(tmp_path, "once", "--config", path)
    assert "__exit_status__1" in default and not matching(default, "uvloop")
    on_uvloop = fresh_modules(
        tmp_path, "once", "--config", path, env={"POP3BRIDGE_EVENT_LOOP": "uvloop"}
    )
    assert "__exit_status__1" in on_uvloop and "uvloop.loop" in on_uvloop


def test_parsing_the_command_line_loads_no_configuration_or_poller(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from bridge.cli import build_parser\n"
        "build_parser(['once']).parse_args(['once', '--config', 'x.yaml'])\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert proc.returncode == 0, proc.stderr
    modules = set(json.loads(proc.stdout))
    assert "bridge.commands.once" in modules  # its arguments are the chosen command's
    later = ("pydantic", "yaml", "aiohttp", "bridge.config", "bridge.poller", "bridge.runtime")
    for name in later:
        assert not matching(modules, name), name


def test_version_imports_no_command(tmp_path: Path) -> None:
    modules = fresh_modules(tmp_path, "--version")
    assert "__exit_status__0" in modules
    assert not matching(modules, "bridge.commands.once")
    for heavy in ("pydantic", "aiohttp", "bridge.config", "bridge.poller"):
        assert not matching(modules, heavy), heavy


def test_parse_worker_preload_needs_neither_aiohttp_nor_pydantic() -> None:
    code = "import json, sys\nimport bridge.outbox\nprint(json.dumps(sorted(sys.modules)))\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert proc.returncode == 0, proc.stderr
    modules = set(json.loads(proc.stdout))
    assert "bridge.mail" in modules
    for heavy in ("aiohttp", "pydantic", "yaml", "bridge.config", "bridge.poller", "tenacity"):
        assert not matching(modules, heavy), heavy


# Runs `once` and writes, at exit, what the early fork did: whether it forked (with the
# configuration imported or not at that moment), the forked worker's pid, and every parse
# worker the pool made (the pid it parsed with; spawned: no forked process handed over).
FORK_PROBE = """
import atexit, json, sys
out = sys.argv[1]
import bridge.outbox._early as early
import bridge.outbox.pool as pool
seen = {"workers": []}
real_fork = early.fork_worker
def fork_worker(env):
    seen["config_imported"] = any(m.startswith("bridge.config") for m in sys.modules)
    seen["forked"] = real_fork(env)
    seen["forked_pid"] = early._forked.pid if early._forked is not None else None
    return seen["forked"]
early.fork_worker = fork_worker
real_init = pool._Worker.__init__
def init(self, memory, forked=None):
    real_init(self, memory, forked)
    seen["workers"].append({"pid": self.process.pid, "spawned": forked is None})
pool._Worker.__init__ = init
atexit.register(lambda: open(out, "w").write(json.dumps({**seen, "modules": sorted(sys.modules)})))
sys.argv = ["pop3bridge", *sys.argv[2:]]
from bridge.cli import main
main()
"""


def run_fork_probe(tmp_path: Path, config_path: Path, env: dict[str, str]) -> dict[str, Any]:
    out = tmp_path / "fork.json"
    proc = run_probe(FORK_PROBE, str(out), "once", "--config", str(config_path), env=env)
    assert out.exists(), proc.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    result["status"] = proc.returncode
    result["stdout"] = proc.stdout
    return result


def dovecot_config(
    tmp_path: Path, dovecot: Any, dovecot_user: Any, webhook: dict[str, Any], level: str
) -> Path:
    """A one-account config on the suite's Dovecot, with the default parse_workers (1)."""
    data = {
        "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "webhooks": [webhook],
        "accounts": [dovecot.plain_account(dovecot_user, "box")],
        "ops": {"enabled": False},
        "logging": {"level": level},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_once_parses_new_mail_in_a_worker_forked_before_the_configuration(
    tmp_path: Path, dovecot: Any, dovecot_user: Any
) -> None:
    from tests.support.receiver import ThreadedReceiver

    dovecot.deliver(dovecot_user, b"From: a@example.com\r\nSubject: forked early\r\n\r\nhi\r\n")
    with ThreadedReceiver(default_status=204) as receiver:
        webhook = {"name": "main", "url": receiver.url, "secret": receiver.secret}
        path = dovecot_config(tmp_path, dovecot, dovecot_user, webhook, "WARNING")
        result = run_fork_probe(tmp_path, path, {})
        assert result["status"] == 0, result["stdout"]
        [request] = receiver.verified
    assert result["forked"] is True and result["config_imported"] is False
    assert "aiohttp" in result["modules"]  # new mail: the sender was opened
    assert "tenacity" not in result["modules"]  # nothing failed: no retry machinery
    # The one worker the pool made is the forked one; none was spawned.
    assert result["workers"] == [{"pid": result["forked_pid"], "spawned": False}]
    data = request.json["data"]
    assert data["subject"] == "forked early" and not data.get("parse_errors")


def test_once_forks_no_worker_when_the_environment_says_zero(
    tmp_path: Path, refusing_port: int
) -> None:
    result = run_fork_probe(
        tmp_path, config(tmp_path, refusing_port), {"POP3BRIDGE_POLLER__PARSE_WORKERS": "0"}
    )
    assert result["status"] == 1  # it ran: the account was refused
    assert result["forked"] is False and result["workers"] == []


def test_once_with_no_new_mail_still_delivers_what_waits_in_the_outbox(
    tmp_path: Path, dovecot: Any, dovecot_user: Any
) -> None:
    """The sender is opened for rows a previous run left (here a 503), not only for new mail."""
    from tests.support.receiver import Reply, ThreadedReceiver

    dovecot.deliver(dovecot_user, b"From: a@example.com\r\nSubject: second try\r\n\r\nhi\r\n")
    with ThreadedReceiver(default_status=204) as receiver:
        webhook = {
            "name": "main",
            "url": receiver.url,
            "secret": receiver.secret,
            "retry_max_delay": "0.2s",
        }
        path = dovecot_config(tmp_path, dovecot, dovecot_user, webhook, "CRITICAL")
        # A fixed back-off (Retry-After), not the jittered one in [0, retry_max_delay]: a
        # jitter shorter than what is left of the run after the 503 retried the row within the
        # first run (1 failure in ~10 runs, at 180c77d too).
        receiver.script(Reply(503, retry_after="1"))
        first = run_fork_probe(tmp_path, path, {})
        assert json.loads(first["stdout"])["retry_later"] == 1, first["stdout"]
        time.sleep(1.2)  # past the retry's back-off
        second = run_fork_probe(tmp_path, path, {})
        summary = json.loads(second["stdout"])
        assert summary["accounts"]["box"]["new"] == 0  # nothing new on the server...
        assert summary["delivered"] == 1 and summary["pending"] == 0  # ...and it went out
        assert second["status"] == 0 and "aiohttp" in second["modules"]
        # Sent twice: answered 503 in the first run, 204 in the second.
        assert [r.json["data"]["subject"] for r in receiver.verified] == ["second try"] * 2


# Runs `once` like PROBE and writes the collector's thresholds at exit.
GC_PROBE = """
import atexit, gc, json, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(gc.get_threshold())))
sys.argv = ["pop3bridge", *sys.argv[2:]]
from bridge.cli import main
main()
"""


def test_once_raises_the_young_threshold_once_its_runtime_is_up(
    tmp_path: Path, refusing_port: int
) -> None:
    """`once` settles (bridge.commands._common.settled) as `run` does: CPython's default of
    700 collected the young generation every few POSTs of a delivery."""
    from bridge.commands._common import YOUNG_THRESHOLD

    out = tmp_path / "gc.json"
    path = config(tmp_path, refusing_port)
    proc = run_probe(GC_PROBE, str(out), "once", "--config", str(path))
    assert proc.returncode == 1, proc.stderr  # the refused account, after the runtime start
    assert json.loads(out.read_text())[0] == YOUNG_THRESHOLD

"""The benchmark scripts still run (tiny sizes, one round): they must not rot between runs.

No timing is asserted (speed belongs in bench/ and BENCHMARKS.md); what is asserted is that
every contender really moved every message, which the scripts themselves check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import require_service
from tests.support.dovecot import dovecot_available

ROOT = Path(__file__).resolve().parents[2]


def run_bench(script: str, args: list[str], results: Path, result_file: str, timeout: float) -> Any:
    """Run bench/`script` against the private Dovecot with its results written under `results`;
    it must exit 0 (the scripts check every message arrived, verified). Returns its JSON."""
    ok, why = dovecot_available()
    require_service("dovecot", ok, why)
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "POP3BRIDGE_BENCH_RESULTS": str(results)},
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return json.loads((results / result_file).read_text())


def test_poller_throughput_quick(tmp_path: Path) -> None:
    data = run_bench(
        "poller_throughput.py",
        ["--quick", "--messages", "40", "--only", "end to end,fetch stage,fetchmail,poplib,raw"],
        tmp_path,
        "poller_throughput_quick.json",
        timeout=120,
    )
    assert data["messages"] == 40
    assert {
        "pop3bridge once (end to end)",
        "pop3bridge once (end to end, nginx receiver)",
        "pop3bridge fetch stage",
        "raw pipelined loop",
        "poplib sequential",
        "fetchmail -> BSMTP",
    } <= set(data["results"])
    for name, result in data["results"].items():
        assert result["median_rate"] > 0, name
        if name.startswith("pop3bridge once"):
            # CPU of the whole process tree, reported by bench/_tree.py.
            assert result["median_cpu_ms_per_item"] > 0, name
    # Start-up and wind-down of the process, from the receiver's arrival times.
    phases = data["results"]["pop3bridge once (end to end)"]["extra"][0]
    assert phases["to_first_post_s"] > 0
    assert phases["after_last_post_s"] > 0


def test_poller_fetch_stage_against_a_baseline_tree(tmp_path: Path) -> None:
    """`--baseline DIR`: both trees' fetch stages run in processes of their own
    (bench/_fetch_stage.py), each importing `bridge` from its tree, which the script checks."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "bridge").symlink_to(ROOT / "bridge")  # a second tree holding the same code
    data = run_bench(
        "poller_throughput.py",
        ["--quick", "--messages", "40", "--only", "fetch stage", "--baseline", str(base)],
        tmp_path,
        "poller_throughput_quick.json",
        timeout=120,
    )
    assert set(data["results"]) == {"pop3bridge fetch stage", "baseline fetch stage (base)"}
    for name, result in data["results"].items():
        assert result["median_rate"] > 0 and result["median_cpu_ms_per_item"] > 0, name


def test_backlog_quick(tmp_path: Path) -> None:
    """`pop3bridge run` (the daemon, stopped once everything arrived) drains a backlog to the
    nginx receiver, beside fetchmail; the script checks every message arrived verified."""
    data = run_bench(
        "backlog.py", ["--quick", "--messages", "40"], tmp_path, "backlog.json", timeout=180
    )
    assert data["messages"] == 40 and data["receiver"] == "nginx"
    assert {
        "run, outbox backlog, parse_workers 0",
        "run, outbox backlog, parse_workers 1",
        "run, mailbox backlog (defaults)",
        "fetchmail -> BSMTP",
    } <= set(data["results"])
    for name, result in data["results"].items():
        assert result["median_rate"] > 0, name
        assert result["median_cpu_ms_per_item"] > 0, name
    assert len(data["targets"]) == 3


@pytest.mark.parametrize("script", ["big_message.py", "many_accounts.py", "proxy.py"])
def test_other_scripts_parse_their_arguments(script: str) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "--quick" in out.stdout


def test_the_long_framer_fuzz_runs_a_round() -> None:
    """bench/fuzz_framers.py runs for hours outside CI; here one tiny round proves it works."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "fuzz_framers.py"),
            "--minutes",
            "0.001",
            "--round",
            "5",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "stray LF bound" in out.stdout and "total" in out.stdout


def test_empty_once_runs_a_round(tmp_path: Path) -> None:
    """`pop3bridge once` with nothing new, both parse_workers values: the script checks each
    run exited 0 and recorded nothing."""
    data = run_bench(
        "empty_once.py", ["--rounds", "1", "--seen", "3"], tmp_path, "empty_once.json", timeout=180
    )
    assert set(data["results"]) == {"this tree, parse_workers 1", "this tree, parse_workers 0"}
    assert all(r["median_cpu_ms"] > 0 for r in data["results"].values())


def test_startup_probe_times_every_phase(tmp_path: Path) -> None:
    """bench/startup.py's probe wraps the pool, the POP3 client and the config loader by name;
    a rename there would leave a phase unmeasured (a '-' in the table) or the run failing."""
    ok, why = dovecot_available()
    require_service("dovecot", ok, why)
    args = ["--rounds", "1", "--messages", "3", "--top", "0"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "startup.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    [row] = [line for line in out.stdout.splitlines() if line.startswith(str(ROOT))][:1]
    # exec -> first POST, min, max, CPU, seven phases, main CPU, warm, workers up
    values = [float(v) for v in row.split()[1:]]
    assert len(values) == 14 and all(v > 0 for v in values[:4])

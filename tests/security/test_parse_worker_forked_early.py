"""The parse worker `pop3bridge once` forks at start-up (bridge/outbox/_early.py).

A worker is never forked from the running bridge: it would inherit the bridge's memory,
secrets included, and locks held by its threads. `fork_worker` forks before the configuration
is imported and only while the process has one thread, and the worker keeps every limit a
spawned one has. These tests run it in fresh interpreters (the test process has imported the
configuration and runs threads, so here it must refuse) and check that it refuses whenever
those conditions fail, holds no configuration, gets the configured memory cap before its
first job, enforces the CPU budget, and is gone when nobody takes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# `Probe` is defined before the fork, so the forked worker can unpickle it.
PRELUDE = """
import asyncio, json, os, sys, threading
import bridge.outbox._early as early
from bridge.outbox import ParseLimits, ParsePool

class Probe:
    def __init__(self, spin=0.0):
        self.spin = spin
    def run(self):
        import resource, time
        end = time.process_time() + self.spin
        while time.process_time() < end:
            pass
        return {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "config": sorted(m for m in sys.modules if m.startswith("bridge.config")),
            "memory": resource.getrlimit(resource.RLIMIT_AS)[0],
        }
    def fallback(self, reason, bare):
        return {"fallback": reason, "bare": bare}

def parse(pool, job):
    async def go():
        try:
            return await pool.run(job)
        finally:
            pool.close()
    return asyncio.run(go())

def gone(pid):
    # Exited, or killed and not yet reaped (a zombie runs nothing), within 5 s of SIGKILL.
    import time
    for _ in range(500):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.01)
    return False
"""


def run(code: str) -> dict[str, Any]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("POP3BRIDGE_")}
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environ,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_the_worker_holds_no_configuration_and_gets_the_configured_memory_cap() -> None:
    result = run(
        """
        forked = early.fork_worker({})
        pid = early._forked.pid
        import bridge.config  # the configuration package, after the fork
        again = early.fork_worker({})
        answer = parse(ParsePool(1, ParseLimits(cpu_seconds=5, memory=1 << 30)), Probe())
        print(json.dumps({"forked": forked, "again": again, "me": os.getpid(),
                          "forked_pid": pid, **answer}))
        """
    )
    assert result["forked"] is True and result["again"] is False
    assert result["pid"] == result["forked_pid"] and result["ppid"] == result["me"]
    assert result["config"] == []  # forked before the configuration existed
    assert result["memory"] == 1 << 30  # from the pool's limits, before the first job


def test_the_forked_worker_enforces_the_cpu_budget() -> None:
    result = run(
        """
        early.fork_worker({})
        pid = early._forked.pid
        answer = parse(ParsePool(1, ParseLimits(cpu_seconds=0.3, memory=1 << 30)), Probe(5.0))
        print(json.dumps({"gone": gone(pid), **answer}))
        """
    )
    assert "parse_timeout" in str(result["fallback"]) and result["bare"] is False
    assert result["gone"] is True  # closed with the pool


def test_it_refuses_with_a_second_thread_after_the_configuration_or_another_count() -> None:
    result = run(
        """
        stop = threading.Event()
        t = threading.Thread(target=stop.wait)
        t.start()
        with_thread = early.fork_worker({})
        stop.set()
        t.join()
        zero = early.fork_worker({"POP3BRIDGE_POLLER__PARSE_WORKERS": "0"})
        two = early.fork_worker({"POP3BRIDGE_POLLER__PARSE_WORKERS": " 2 "})
        import bridge.config.units
        after_config = early.fork_worker({})
        print(json.dumps({"with_thread": with_thread, "zero": zero, "two": two,
                          "after_config": after_config, "left": early._forked is not None}))
        """
    )
    assert result == {
        "with_thread": False,
        "zero": False,
        "two": False,
        "after_config": False,
        "left": False,
    }


def test_a_worker_nobody_takes_is_gone() -> None:
    result = run(
        """
        early.fork_worker({})
        idle = early._forked.pid
        early.discard_forked()
        discarded = gone(idle)
        early.fork_worker({})
        unused = early._forked.pid
        ParsePool(1).close()  # settings with a worker, nothing to parse
        closed = gone(unused)
        early.fork_worker({})
        other = early._forked.pid
        pool = ParsePool(2, ParseLimits(cpu_seconds=5, memory=1 << 30))
        pool.warm()  # two spawned workers; the forked one is not theirs
        spawned = pool.pids()
        two = gone(other)
        pool.close()
        print(json.dumps({"discarded": discarded, "closed": closed, "two": two,
                          "other": other, "spawned": spawned, "left": early._forked}))
        """
    )
    assert result["discarded"] and result["closed"] and result["two"]
    assert len(result["spawned"]) == 2 and result["other"] not in result["spawned"]
    assert result["left"] is None

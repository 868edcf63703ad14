"""Helpers for the security tests: run a `pop3bridge` subcommand or a whole `run` until its
mail is delivered, write configs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from bridge.testing.fakepop3 import FakePOP3Server
from tests.support.wait import wait_until_sync

ROOT = Path(__file__).resolve().parents[2]


def bridge(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str]:
    """(exit code, stdout + stderr) of ``python -m bridge ARGS``."""
    done = subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def write_config(
    path: Path,
    accounts: list[dict[str, Any]],
    *,
    state: str,
    webhook: dict[str, Any] | None = None,
    level: str = "DEBUG",
) -> Path:
    config = {
        "state": {"url": state},
        "webhooks": [
            {
                "name": "main",
                "url": "http://127.0.0.1:9/never-called",
                "secret": "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB",
                "timeout": 3,
                **(webhook or {}),
            }
        ],
        "accounts": accounts,
        "poller": {"jitter": 0, "shutdown_grace": 2},
        "ops": {"enabled": False},
        "logging": {"format": "json", "level": level},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def fake_account_config(name: str, server: FakePOP3Server) -> dict[str, Any]:
    """A config-file account that polls `server` every second over plain TCP."""
    return {
        "name": name,
        "host": "127.0.0.1",
        "port": server.port,
        "tls": "none",
        "allow_plaintext": True,
        "auth": "user",
        "username": server.user,
        "password": server.password,
        "webhook": "main",
        "poll_interval": 1,
    }


def healthz_latency(port: int) -> float:
    """Seconds the ops server took to answer one GET /healthz."""
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as answer:
        answer.read()
    return time.monotonic() - started


def run_until_delivered(
    config: dict[str, Any],
    workdir: Path,
    *,
    done: Callable[[], bool],
    servers: Sequence[FakePOP3Server],
    ops_port: int,
    each: Callable[[], None] = lambda: None,
) -> list[float]:
    """Run ``pop3bridge run`` on `config` (log: workdir/bridge.log), sampling /healthz's
    latency, until `done()`; then until each fake server has seen two more whole polls (a
    message recorded twice would have been recorded again by then, and is sent before the
    graceful exit that follows). `each()` runs between samples. Returns the latencies."""
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with (workdir / "bridge.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    latencies: list[float] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not done():
            with contextlib.suppress(OSError):
                latencies.append(healthz_latency(ops_port))
            each()
            time.sleep(0.05)  # the step of a condition poll (deadline above)
        after = [len(s.connections) for s in servers]
        wait_until_sync(
            lambda: all(
                sum(c.closed for c in s.connections[n:]) >= 2
                for s, n in zip(servers, after, strict=True)
            ),
            30,
            what="two more polls of each mailbox",
        )
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:  # stuck (as it was before the parse workers)
            proc.kill()
            proc.wait()
    return latencies

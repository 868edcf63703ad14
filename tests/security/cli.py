"""Helpers for the security tests: run a `pop3bridge` subcommand, write configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

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

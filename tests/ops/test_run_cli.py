"""`pop3bridge run` whose ops port is taken: one actionable line and exit 1, not a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import yaml


def test_a_taken_ops_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "c.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "state": {"url": f"sqlite:///{tmp_path / 's.db'}"},
                    "ops": {"host": "127.0.0.1", "port": port},
                    "logging": {"format": "text"},
                }
            )
        )
        proc = subprocess.run(
            [sys.executable, "-m", "bridge", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"ops endpoint cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "set ops.port, or ops.enabled: false" in proc.stderr

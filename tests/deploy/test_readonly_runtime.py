"""The image runs with a read-only root filesystem: the process may write only under the state
volume and /tmp. Without a container engine this is checked from inside Python: the commands
run with the image's environment (state dir and TMPDIR swapped for temporary ones) under an
audit hook that records every path opened for writing, created, renamed or removed, including
SQLite's database files and any bytecode the interpreter would cache."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from deploy_support import dockerfile_instructions, env_of, final_stage

STATE_DIR = "/var/lib/pop3bridge"

# Runs a pop3bridge command with an audit hook; every write-like event's path goes to the file
# named by $WRITES_LOG (opened before the hook is installed, so it does not report itself).
RUNNER = textwrap.dedent(
    """
    import os, sys

    log = open(os.environ["WRITES_LOG"], "a", buffering=1)
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    PATH_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir",
                   "os.symlink", "os.link", "os.truncate", "os.chmod", "shutil.rmtree"}

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            writing = bool(mode and any(c in str(mode) for c in "wax+"))
            writing = writing or bool(isinstance(flags, int) and flags & WRITE_FLAGS)
            if writing:
                log.write(os.fsdecode(path) + "\\n")
        elif event in PATH_EVENTS and args and not isinstance(args[0], int):
            log.write(os.fsdecode(args[0]) + "\\n")
        elif event == "sqlite3.connect":
            log.write(str(args[0]) + "\\n")

    sys.addaudithook(hook)
    if sys.argv[1:] == ["--selftest"]:
        open(os.environ["SELFTEST_PATH"], "w").close()
        sys.exit(0)
    from bridge.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def image_env(state: Path, tmp: Path, config: Path, writes: Path) -> dict[str, str]:
    env = env_of(final_stage(dockerfile_instructions()))
    assert env["HOME"] == STATE_DIR and env.get("TMPDIR", "/tmp") == "/tmp"
    env.update(
        HOME=str(state),
        TMPDIR=str(tmp),
        PATH=os.environ["PATH"],
        POP3BRIDGE_CONFIG=str(config),
        WRITES_LOG=str(writes),
    )
    for passthrough in ("VIRTUAL_ENV", "PYTHONPATH", "LANG", "LC_ALL"):
        if passthrough in os.environ:
            env[passthrough] = os.environ[passthrough]
    return env


def run(
    tmp_path: Path, *argv: str, extra: dict[str, str] | None = None
) -> tuple[Path, Path, list[str]]:
    state, tmp = tmp_path / "state", tmp_path / "tmp"
    state.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    config = tmp_path / "etc" / "config.yaml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(
        yaml.safe_dump(
            {
                "state": {"url": f"sqlite:///{state}/state.db"},
                "ops": {"port": 0},
                "logging": {"format": "json", "level": "DEBUG"},
            }
        )
    )
    writes = tmp_path / "writes.txt"
    writes.write_text("")
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    env = {**image_env(state, tmp, config, writes), **(extra or {})}
    proc = subprocess.run(
        [sys.executable, str(runner), *argv],
        cwd=state,  # the image's WORKDIR is the state volume
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    paths = [ln for ln in writes.read_text().splitlines() if ln]
    return state, tmp, paths


def outside(paths: list[str], *allowed: Path, cwd: Path) -> list[str]:
    roots = [os.path.realpath(a) for a in allowed]
    bad = []
    for p in paths:
        if p in (":memory:", ""):
            continue
        real = os.path.realpath(os.path.join(cwd, p))
        if not any(real == r or real.startswith(r + os.sep) for r in roots):
            bad.append(p)
    return bad


def test_the_audit_hook_sees_writes(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "file"
    target.parent.mkdir()
    _state, _tmp, paths = run(tmp_path, "--selftest", extra={"SELFTEST_PATH": str(target)})
    assert str(target) in paths


@pytest.mark.parametrize(
    "argv",
    [
        ["once"],  # opens and migrates the SQLite state in the state dir
        ["demo", "--duration", "3"],  # polls, records, delivers, serves ops, logs
    ],
    ids=["once", "demo"],
)
def test_commands_write_only_to_the_state_volume_and_tmp(tmp_path: Path, argv: list[str]) -> None:
    state, tmp, paths = run(tmp_path, *argv)
    assert paths, "nothing was recorded: the state database at least must be"
    assert outside(paths, state, tmp, cwd=state) == []
    assert not any(p.endswith(".pyc") for p in paths)
    if argv[0] == "once":
        assert (state / "state.db").exists()

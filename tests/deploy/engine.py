"""The Docker engine the container tests drive, and the image they test.

`make test` runs the container tests when a Docker engine answers (``docker info``) and skips
them otherwise; with ``CI=true`` a missing or broken engine fails them instead (`missing`).
`.ci/run` starts the daemon (`.ci/dockerd`) and makes the base image exist (`.ci/base-image`);
the `image` fixture (tests/deploy/conftest.py) then builds the repository's Dockerfile once
per session with the classic builder, on the host network, and every test reuses it.

Every container and volume a test creates carries the session's label, and the session removes
them all at the end, whatever the tests did.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy_support import DOCKERFILE, ROOT, missing

IMAGE = "pop3bridge:test"
BUILDER = "pop3bridge:test-builder"
SESSION_LABEL = "org.pop3bridge.test-session"

# Facts for the end-of-run summary (image size, venv sizes, build time, unchecked kinds).
REPORT: list[str] = []


def base_image() -> str:
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words[:1] and words[0].upper() == "FROM":
            return words[1]
    raise AssertionError("Dockerfile has no FROM")


@dataclass
class Docker:
    """The `docker` CLI bound to one engine; `session` labels what this test run creates."""

    exe: str
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.exe, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
            )
        return proc

    def label(self) -> list[str]:
        return ["--label", f"{SESSION_LABEL}={self.session}"]

    def volume(self) -> str:
        return self("volume", "create", *self.label()).stdout.strip()

    def inspect(self, what: str) -> Any:
        return json.loads(self("inspect", what).stdout)[0]

    def wait_for(
        self, what: str, ok: Callable[[], bool], timeout: float, container: str | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ok():
                return
            time.sleep(0.5)
        logs = self("logs", container, check=False).stderr[-3000:] if container else ""
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{logs}")

    def health(self, container: str) -> str:
        state = self.inspect(container)["State"]
        return str(state.get("Health", {}).get("Status", "none"))

    def cleanup(self) -> None:
        """Remove every container and volume this session created."""
        flt = f"label={SESSION_LABEL}={self.session}"
        ids = self("ps", "-aq", "--filter", flt, check=False).stdout.split()
        if ids:
            self("rm", "-f", "-v", *ids, check=False, timeout=120)
        vols = self("volume", "ls", "-q", "--filter", flt, check=False).stdout.split()
        if vols:
            self("volume", "rm", "-f", *vols, check=False)


def engine() -> Docker:
    """The engine, or skip (fail when CI=true) saying what is missing."""
    exe = shutil.which("docker")
    if exe is None:
        missing("a Docker engine (the `docker` CLI is not installed: apt-get install docker.io)")
    assert exe is not None
    docker = Docker(exe)
    info = docker("info", "--format", "{{.ServerVersion}} {{.Driver}}", check=False, timeout=30)
    if info.returncode != 0:
        missing(f"a Docker engine (docker info: {info.stderr.strip()[-300:]}; see .ci/dockerd)")
    return docker


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    builder: str
    size: int  # bytes, as `docker image inspect` reports
    base: str
    base_kind: str  # the real base or the debootstrap stand-in
    build_seconds: float
    log: str


def build(docker: Docker, log_dir: Path) -> BuiltImage:
    """Build the repository's Dockerfile once, and tag the builder stage's venv-installing
    step as BUILDER (its /opt/venv.size records the venv before and after the clean-up).

    The step is found in the classic builder's log rather than by a second `--target builder`
    build: a second build reads the context again, and any file changed in between would make
    it install everything anew."""
    base = base_image()
    found = docker("image", "inspect", base, check=False)
    if found.returncode != 0:
        missing(f"the base image {base} (run .ci/base-image: pulls it or makes a stand-in)")
    labels = json.loads(found.stdout)[0]["Config"].get("Labels") or {}
    base_kind = labels.get("org.pop3bridge.base", "pulled")
    started = time.monotonic()
    log_path = log_dir / "docker-build.log"
    args = ["build", "--network=host", "--pull=false", "--rm", "--force-rm", "-t", IMAGE]
    proc = docker(*args, str(ROOT), timeout=1800, check=False)
    log = proc.stdout + proc.stderr
    log_path.write_text(log)
    if proc.returncode != 0:
        raise AssertionError(f"docker build failed ({log_path}):\n{log[-4000:]}")
    seconds = time.monotonic() - started
    docker("tag", step_image(log, "/opt/venv.size"), BUILDER)
    size = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGE).stdout.strip())
    return BuiltImage(IMAGE, BUILDER, size, base, base_kind, seconds, log)


def step_image(log: str, marker: str) -> str:
    """The image the classic builder committed for the first step whose text has `marker`."""
    lines = log.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("Step ") and marker in line)
    for line in lines[start + 1 :]:
        if line.startswith("Step "):
            break
        m = re.fullmatch(r" ---> ([0-9a-f]{12,64})", line)
        if m:
            return m.group(1)
    raise AssertionError(f"no image committed after the step with {marker!r}")

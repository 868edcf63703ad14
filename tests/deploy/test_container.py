"""The image, built from the Dockerfile and run by a real Docker engine (issue 13).

Every container runs with the host's network namespace (``--network=host``) or none at all, so
the suite's Dovecot and its signature-verifying receiver on 127.0.0.1 are reachable and nothing
leaves loopback; the ops endpoint is moved to a free loopback port for the same reason.
Skipped without an engine, failed without one when CI=true (see engine.py).
"""

from __future__ import annotations

import json
import poplib
import re
import shlex
import socket
import ssl
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import DOCKERFILE, ROOT, dockerfile_instructions, final_stage
from engine import REPORT, BuiltImage, Docker

from bridge.testing.samples import generate_messages
from tests.support.receiver import ThreadedReceiver

# The first test also waits for the session's image build (minutes on vfs, more on a busy machine).
pytestmark = [pytest.mark.container, pytest.mark.dovecot, pytest.mark.timeout(1800)]

STATE = "/var/lib/pop3bridge"
SECRETS = "/run/secrets/pop3bridge"
# What docs/deploy.md tells people to run with: read-only root, nothing but /tmp writable
# besides the state volume, no capabilities, no privilege gain.
HARDENED = [
    "--read-only",
    "--tmpfs",
    "/tmp",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def readable_dir(path: Path) -> Path:
    """Bind-mounted files must be readable by UID 10001 in the container (pytest's temp dirs
    are private to root)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    for p in path.iterdir():
        p.chmod(0o644)
    return path


def package_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


# --- 1. hardened, non-root, writes nothing outside the state volume and /tmp --------------


def test_version_as_a_non_root_user_on_a_read_only_root(docker: Docker, image: BuiltImage) -> None:
    base = ["run", "--rm", *docker.label(), "--network=none", *HARDENED]
    out = docker(*base, image.tag, "--version").stdout
    assert package_version() in out, out
    ids = docker(
        *base,
        "--entrypoint",
        "python",
        image.tag,
        "-c",
        "import os; print(os.getuid(), os.getgid(), os.geteuid(), os.getegid())",
    ).stdout.split()
    assert ids == ["10001"] * 4
    assert docker.inspect(image.tag)["Config"]["User"] == "10001:10001"


def minimal_config(tmp: Path) -> Path:
    cfg = tmp / "etc"
    cfg.mkdir()
    (cfg / "config.yaml").write_text(
        yaml.safe_dump(
            {"state": {"url": f"sqlite://{STATE}/state.db"}, "logging": {"format": "json"}}
        )
    )
    readable_dir(cfg)
    return cfg / "config.yaml"


@pytest.mark.parametrize("argv", [["once"], ["demo", "--duration", "3"]], ids=["once", "demo"])
def test_commands_write_only_to_the_state_volume_and_tmp(
    docker: Docker, image: BuiltImage, tmp_path: Path, argv: list[str]
) -> None:
    config = minimal_config(tmp_path)
    volume = docker.volume()
    mounts = ["-v", f"{config}:/etc/pop3bridge/config.yaml:ro", "-v", f"{volume}:{STATE}"]
    # Read-only root: the command must still succeed...
    docker("run", "--rm", *docker.label(), "--network=none", *HARDENED, *mounts, image.tag, *argv)
    # ...and with a writable root, the engine's record of the container's own layer must be
    # empty: every write went to the volume or the /tmp tmpfs.
    name = f"rw-{docker.session}-{argv[0]}"
    docker("run", "--name", name, *docker.label(), "--network=none", "--tmpfs", "/tmp",
           *mounts, image.tag, *argv)  # fmt: skip
    changed = docker("diff", name).stdout.splitlines()
    # The engine itself adds the bind mount's target (and marks its parents changed).
    engine_made = {"C /etc", "C /etc/pop3bridge", "A /etc/pop3bridge/config.yaml"}
    assert [c for c in changed if c not in engine_made] == []
    docker("rm", "-v", name)
    if argv[0] == "once":
        listing = docker(
            "run", "--rm", *docker.label(), "--network=none", "-v", f"{volume}:/data",
            "--entrypoint", "ls", image.tag, "-ln", "/data",
        ).stdout  # fmt: skip
        assert re.search(r"10001\s+10001\s+\d+ .* state\.db$", listing, re.M), listing


# --- 2. `run` against the suite's Dovecot ------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[ThreadedReceiver]:
    with ThreadedReceiver() as rx:
        yield rx


def poller_files(tmp: Path, dovecot: Any, user: Any, rx: ThreadedReceiver) -> list[str]:
    """A config file and a directory of secret files, mounted the way docs/deploy.md shows."""
    secrets = tmp / "secrets"
    secrets.mkdir()
    (secrets / "webhook-secret").write_text(rx.secret + "\n")
    (secrets / "box-password").write_text(user.password + "\n")
    readable_dir(secrets)
    etc = tmp / "etc"
    etc.mkdir()
    config = {
        "state": {"url": f"sqlite://{STATE}/state.db"},
        "logging": {"format": "json", "level": "INFO"},
        "webhooks": [{"name": "main", "url": rx.url, "secret_file": f"{SECRETS}/webhook-secret"}],
        "accounts": [
            {
                "name": "box",
                "host": dovecot.host,
                "port": dovecot.pop3_port,
                "tls": "none",
                "allow_plaintext": True,
                "username": user.name,
                "password_file": f"{SECRETS}/box-password",
                "webhook": "main",
                "poll_interval": 1,
            }
        ],
    }
    (etc / "config.yaml").write_text(yaml.safe_dump(config))
    readable_dir(etc)
    return [
        "-v",
        f"{etc / 'config.yaml'}:/etc/pop3bridge/config.yaml:ro",
        "-v",
        f"{secrets}:{SECRETS}:ro",
    ]


def ops_env(port: int) -> list[str]:
    # With the host's network the image's 0.0.0.0:8080 would be this machine's; keep loopback.
    return ["-e", "POP3BRIDGE_OPS__HOST=127.0.0.1", "-e", f"POP3BRIDGE_OPS__PORT={port}"]


FAST_HEALTH = ["--health-interval=1s", "--health-timeout=4s", "--health-retries=2",
               "--health-start-period=60s"]  # fmt: skip


def message_ids(rx: ThreadedReceiver) -> list[str]:
    return [r.json["data"]["message_id"] for r in rx.delivered]


def test_run_delivers_signed_stops_cleanly_and_a_new_container_redelivers_nothing(
    docker: Docker,
    image: BuiltImage,
    dovecot: Any,
    dovecot_user: Any,
    receiver: ThreadedReceiver,
    tmp_path: Path,
) -> None:
    mail = generate_messages(3, seed=1301)
    dovecot.deliver_many(dovecot_user, mail)
    mounts = poller_files(tmp_path, dovecot, dovecot_user, receiver)
    volume = docker.volume()
    common = [*docker.label(), "--network=host", *HARDENED, *mounts, "-v", f"{volume}:{STATE}"]
    name = f"run-{docker.session}"
    docker("run", "-d", "--name", name, *common, *ops_env(free_port()), *FAST_HEALTH,
           image.tag)  # fmt: skip
    receiver.wait_for(3, timeout=60)
    assert len(receiver.delivered) == 3 and receiver.invalid == 0
    first = sorted(message_ids(receiver))
    docker.wait_for("healthy", lambda: docker.health(name) == "healthy", 60, name)

    grace = 20
    started = time.monotonic()
    docker("stop", "-t", str(grace), name, timeout=grace + 30)
    took = time.monotonic() - started
    state = docker.inspect(name)["State"]
    logs = docker("logs", name)
    docker("rm", "-v", name)
    assert state["ExitCode"] == 0 and not state["OOMKilled"], state
    assert took < grace, f"docker stop took {took:.1f} s: SIGTERM was not honoured"
    for line in (logs.stdout + logs.stderr).splitlines():
        json.loads(line)  # JSON logs: every line the container wrote

    # A new container on the same volume: the one new message, nothing again.
    dovecot.deliver_many(dovecot_user, generate_messages(1, seed=1302))
    docker("run", "--rm", *common, *ops_env(free_port()), image.tag, "once", timeout=120)
    receiver.wait_quiet()  # the container has exited: once its connections are closed, a
    # stray duplicate would have been recorded
    ids = message_ids(receiver)
    assert len(ids) == 4 and len(set(ids)) == 4, ids
    assert sorted(ids[:3]) == first
    assert dovecot.message_count(dovecot_user) == 4  # on_delivered: keep


def test_healthcheck_turns_unhealthy_when_the_state_volume_is_unusable(
    docker: Docker,
    image: BuiltImage,
    dovecot: Any,
    dovecot_user: Any,
    receiver: ThreadedReceiver,
    tmp_path: Path,
) -> None:
    """A full state volume: the open database still answers reads, but nothing new can be
    recorded; the HEALTHCHECK (/readyz) must say so, and recover once there is room again."""
    mounts = poller_files(tmp_path, dovecot, dovecot_user, receiver)
    state = f"{STATE}:size=8m,uid=10001,gid=10001,mode=0750"
    name = f"health-{docker.session}"
    docker("run", "-d", "--name", name, *docker.label(), "--network=host", *HARDENED, *mounts,
           "--tmpfs", state, *ops_env(free_port()), *FAST_HEALTH, image.tag)  # fmt: skip
    docker.wait_for("healthy", lambda: docker.health(name) == "healthy", 90, name)
    fill = docker("exec", name, "sh", "-c", f"cat /dev/zero > {STATE}/fill", check=False)
    assert "No space left on device" in fill.stderr, fill.stderr
    docker.wait_for("unhealthy", lambda: docker.health(name) == "unhealthy", 60, name)
    health = docker.inspect(name)["State"]["Health"]
    assert health["Log"][-1]["ExitCode"] != 0
    docker("exec", name, "rm", f"{STATE}/fill")
    docker.wait_for("healthy again", lambda: docker.health(name) == "healthy", 60, name)
    docker("rm", "-f", name)


# --- 3. the proxy from the image -----------------------------------------------------------


def proxy_files(tmp: Path, dovecot: Any, tls_certs: Any) -> list[str]:
    tls = tmp / "tls"
    tls.mkdir()
    (tls / "cert.pem").write_bytes(Path(tls_certs.cert_file).read_bytes())
    (tls / "key.pem").write_bytes(Path(tls_certs.key_file).read_bytes())
    readable_dir(tls)
    etc = tmp / "etc"
    etc.mkdir()
    cert = {"cert_file": f"{SECRETS}/cert.pem", "key_file": f"{SECRETS}/key.pem"}
    config = {
        "logging": {"format": "json", "level": "INFO"},
        "proxy": {
            "listeners": [
                {"name": "pop3", "host": "127.0.0.1", "port": 0, "starttls": True, **cert},
                {"name": "pop3s", "host": "127.0.0.1", "port": 0, "tls": "implicit", **cert},
            ],
            "upstream": {"host": dovecot.host, "port": dovecot.pop3_port, "tls": "none"},
        },
    }
    (etc / "config.yaml").write_text(yaml.safe_dump(config))
    readable_dir(etc)
    return [
        "-v",
        f"{etc / 'config.yaml'}:/etc/pop3bridge/config.yaml:ro",
        "-v",
        f"{tls}:{SECRETS}:ro",
    ]


def retrieve(conn: poplib.POP3, user: Any) -> list[bytes]:
    conn.user(user.name)
    conn.pass_(user.password)
    count = conn.stat()[0]
    got = [b"\r\n".join(conn.retr(n)[1]) for n in range(1, count + 1)]
    conn.quit()
    return got


def test_proxy_relays_the_same_bytes_over_stls_and_implicit_tls(
    docker: Docker,
    image: BuiltImage,
    dovecot: Any,
    dovecot_user: Any,
    tls_certs: Any,
    tmp_path: Path,
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(3, seed=1303))
    mounts = proxy_files(tmp_path, dovecot, tls_certs)
    name = f"proxy-{docker.session}"
    docker("run", "-d", "--name", name, *docker.label(), "--network=host", *HARDENED, *mounts,
           *ops_env(free_port()), image.tag, "proxy")  # fmt: skip

    # Scripts learn the bound ports from the JSON lines (port 0 in the config).
    ports: dict[str, int] = {}

    def announced() -> bool:
        out = docker("logs", name).stdout
        for line in out.splitlines():
            doc = json.loads(line)
            if doc.get("event") == "listening":
                ports[doc["listener"]] = int(doc["port"])
        return len(ports) == 2

    docker.wait_for("the listening lines", announced, 60, name)
    direct = retrieve(poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=20), dovecot_user)
    ctx: ssl.SSLContext = tls_certs.client_context()
    stls = poplib.POP3("localhost", ports["pop3"], timeout=20)
    stls.stls(context=ctx)
    via_stls = retrieve(stls, dovecot_user)
    implicit = poplib.POP3_SSL("localhost", ports["pop3s"], timeout=20, context=ctx)
    via_implicit = retrieve(implicit, dovecot_user)
    assert len(direct) == 3 and via_stls == direct and via_implicit == direct

    docker("stop", "-t", "20", name, timeout=60)
    logs = docker("logs", name)
    assert docker.inspect(name)["State"]["ExitCode"] == 0
    lines = (logs.stdout + logs.stderr).splitlines()
    docker("rm", "-v", name)  # each stopped container keeps a full copy of the image on vfs
    assert lines and all(json.loads(line)["timestamp"] for line in lines)
    assert dovecot_user.password not in logs.stdout + logs.stderr


# --- 4. what the runtime stage carries -----------------------------------------------------

PROBE = """
import importlib.util, json, shutil, sys
found = {m: importlib.util.find_spec(m) is not None for m in ("pip", "setuptools", "wheel")}
tools = {t: shutil.which(t) for t in ("pip", "pip3", "gcc", "cc", "c++", "make", "ld")}
print(json.dumps({"python": sys.executable, "modules": found, "tools": tools}))
"""
# One container for every look (each start copies the whole image on vfs).
LOOK = f"""
/opt/venv/bin/python -c '{PROBE}' && /usr/local/bin/python -c '{PROBE}' &&
echo "leftovers: $(find / -xdev \\( -name '*.whl' -o -path '*/.cache' -o -name pip -o \
  -name setuptools -o -name '*.deb' -o -path '/var/lib/apt/lists/*_Packages' \\) -print)" &&
du -sk /opt/venv
"""


def test_the_runtime_stage_carries_no_installers_compilers_or_caches(
    docker: Docker, image: BuiltImage
) -> None:
    run = ["run", "--rm", *docker.label(), "--network=none", "--entrypoint"]
    out = docker(*run, "sh", image.tag, "-c", LOOK).stdout.splitlines()
    for doc in map(json.loads, out[:2]):
        assert not any(doc["modules"].values()), doc
        assert not any(doc["tools"].values()), doc
    assert out[2] == "leftovers: ", out[2]
    shipped = int(out[3].split()[0])

    sizes = docker(*run, "cat", image.builder, "/opt/venv.size").stdout
    before = int(re.search(r"installed (\d+)", sizes).group(1))  # type: ignore[union-attr]
    after = int(re.search(r"runtime (\d+)", sizes).group(1))  # type: ignore[union-attr]
    REPORT.append(
        f"venv /opt/venv: {before / 1024:.1f} MiB as pip installed it, {after / 1024:.1f} MiB "
        f"without pip/setuptools and with bytecode; {shipped / 1024:.1f} MiB in the image"
    )
    assert after < before
    assert shipped == after


def test_the_user_is_created_without_warnings(docker: Docker, image: BuiltImage) -> None:
    """The Dockerfile's groupadd/useradd, replayed in a fresh base container: no warning."""
    runs = [i.args for i in final_stage(dockerfile_instructions()) if i.keyword == "RUN"]
    steps = [
        step.strip()
        for run in runs
        for step in run.split("&&")
        if step.strip().startswith(("groupadd", "useradd"))
    ]
    assert [s.split()[0] for s in steps] == ["groupadd", "useradd"], steps
    out = docker(
        "run", "--rm", *docker.label(), "--network=none", "--entrypoint", "sh", image.base, "-c",
        " && ".join(steps) + " && id pop3bridge",
    )  # fmt: skip
    assert out.stderr == "", out.stderr
    assert "uid=10001(pop3bridge) gid=10001(pop3bridge)" in out.stdout
    assert shlex.split(steps[1])  # well-formed


def test_the_image_size_is_reported(image: BuiltImage) -> None:
    assert image.size > 0
    assert any(line.startswith(f"image {image.tag}:") for line in REPORT)
    # The base is what the Dockerfile names, whatever produced it.
    assert image.base in DOCKERFILE.read_text()

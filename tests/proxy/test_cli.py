"""`pop3bridge proxy` as a subprocess in front of Dovecot: curl, fetchmail, logs, ops, memory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.testing.samples import big_message, generate_messages
from tests.support import require_service
from tests.support.announce import parse_announcement
from tests.support.rss import RssPeak

pytestmark = pytest.mark.dovecot


class ProxyProcess:
    def __init__(self, config: dict[str, Any], tmp: Path) -> None:
        path = tmp / "proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        self.stderr_path = tmp / "proxy.log"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "proxy", "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.ports: dict[str, int] = {}
        self.ops_url = ""
        self.stdout_lines: list[str] = []
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        wanted = len(config["proxy"]["listeners"])
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            self.stdout_lines.append(line)
            said = parse_announcement(line)
            if said and said["event"] == "listening":
                self.ports[said["listener"]] = int(said["port"])
            elif said and said["event"] == "ops":
                self.ops_url = said["url"]
                break
        if len(self.ports) != wanted or not self.ops_url:
            self.stop()
            raise AssertionError(f"proxy did not start: {self.log_text()}")

    def log_text(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_text().splitlines() if line.startswith("{")]

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.ops_url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=20)
        finally:
            self._stderr.close()


def proxy_config(dovecot: Any, tls_certs: Any, **policy: Any) -> dict[str, Any]:
    return {
        "logging": {"format": "json", "level": "INFO"},
        "ops": {"host": "127.0.0.1", "port": 0},
        "proxy": {
            "log_commands": True,
            "shutdown_grace": 10,
            "policy": policy,
            "listeners": [
                {"name": "plain", "port": 0},
                {
                    "name": "pop3s",
                    "port": 0,
                    "tls": "implicit",
                    "cert_file": str(tls_certs.cert_file),
                    "key_file": str(tls_certs.key_file),
                },
            ],
            "upstream": {"host": dovecot.host, "port": dovecot.pop3_port, "tls": "none"},
        },
    }


@pytest.fixture
def proxy(dovecot, tls_certs, tmp_path) -> Iterator[ProxyProcess]:
    proc = ProxyProcess(proxy_config(dovecot, tls_certs), tmp_path)
    yield proc
    proc.stop()


def curl(*args: str) -> bytes:
    exe = shutil.which("curl")
    require_service("curl", exe is not None, "not installed")
    assert exe is not None
    done = subprocess.run([exe, "-sS", "-v", "--max-time", "20", *args], capture_output=True)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def assert_no_secret(proxy: ProxyProcess, *secrets: str) -> None:
    text = proxy.log_text()
    for secret in secrets:
        assert secret not in text


def test_curl_pop3_and_pop3s_through_proxy_match_direct(dovecot, dovecot_user, proxy, tls_certs):
    mail = generate_messages(3, seed=11)
    dovecot.deliver_many(dovecot_user, mail)
    cred = f"{dovecot_user.name}:{dovecot_user.password}"
    for what in ("", "2"):
        direct = curl("-u", cred, f"pop3://127.0.0.1:{dovecot.pop3_port}/{what}")
        plain = curl("-u", cred, f"pop3://127.0.0.1:{proxy.ports['plain']}/{what}")
        wrapped = curl(
            "--cacert",
            str(tls_certs.ca_file),
            "-u",
            cred,
            f"pop3s://localhost:{proxy.ports['pop3s']}/{what}",
        )
        assert plain == direct == wrapped and direct
    assert dovecot.message_count(dovecot_user) == 3
    # One JSON line per command/response pair, with the fields the docs promise.
    lines = proxy.log_lines()
    commands = [x for x in lines if x.get("event") == "command"]
    retr = [x for x in commands if x["verb"] == "RETR"]
    assert retr and retr[0]["status"] == "ok" and retr[0]["response_bytes"] > 4000
    assert {"session", "client", "user", "upstream", "latency_ms", "arguments"} <= retr[0].keys()
    assert any(x.get("event") == "close" and x["reason"] == "quit" for x in lines)
    assert_no_secret(proxy, dovecot_user.password)


def test_fetchmail_through_proxy_gets_what_it_gets_directly(dovecot, dovecot_user, proxy, tmp_path):
    exe = shutil.which("fetchmail")
    require_service("fetchmail", exe is not None, "not installed")
    mail = generate_messages(3, seed=12)
    dovecot.deliver_many(dovecot_user, mail)

    def fetch(port: int, name: str) -> list[bytes]:
        out = tmp_path / name
        out.mkdir()
        rc = tmp_path / f"{name}.rc"
        rc.write_text(
            f"poll 127.0.0.1 service {port} protocol POP3 auth password\n"
            f'  user "{dovecot_user.name}" password "{dovecot_user.password}"\n'
            f"  sslproto '' keep fetchall\n"
            f"  mda \"sh -c 'cat > {out}/$$'\"\n"
        )
        rc.chmod(0o600)
        home = tmp_path / f"{name}-home"
        home.mkdir()
        done = subprocess.run(
            [exe, "-f", str(rc), "--nodetach", "--invisible", "-v"],  # type: ignore[list-item]
            check=False,
            capture_output=True,
            timeout=60,
            env={**os.environ, "HOME": str(home), "FETCHMAILHOME": str(home)},
        )
        got = sorted(p.read_bytes() for p in out.iterdir())
        assert len(got) == 3, (done.stdout + done.stderr).decode(errors="replace")[-3000:]
        return got

    direct = fetch(dovecot.pop3_port, "direct")
    through = fetch(proxy.ports["plain"], "proxy")
    assert len(direct) == 3 and through == direct
    assert dovecot.message_count(dovecot_user) == 3
    assert_no_secret(proxy, dovecot_user.password)


def test_secrets_never_logged_and_ops_and_metrics(dovecot, dovecot_user, proxy):
    import base64
    import poplib

    plain_ir = base64.b64encode(f"\0{dovecot_user.name}\0{dovecot_user.password}".encode())
    conn = poplib.POP3("127.0.0.1", proxy.ports["plain"], timeout=10)
    conn._shortcmd("AUTH PLAIN " + plain_ir.decode())
    conn.quit()
    conn = poplib.POP3("127.0.0.1", proxy.ports["plain"], timeout=10)
    conn._putcmd("AUTH LOGIN")
    conn._getline()
    conn._putcmd(base64.b64encode(dovecot_user.name.encode()).decode())
    conn._getline()
    conn._putcmd(base64.b64encode(dovecot_user.password.encode()).decode())
    assert conn._getline()[0].startswith(b"+OK")
    conn.quit()
    conn = poplib.POP3("127.0.0.1", proxy.ports["plain"], timeout=10)
    conn.user(dovecot_user.name)
    with pytest.raises(poplib.error_proto):
        conn.pass_("wrong-" + dovecot_user.password)
    # A too-long line holding a password is answered -ERR and never logged.
    conn._putcmd("PASS " + dovecot_user.password + "x" * 400)
    assert conn._getline()[0].startswith(b"-ERR")
    conn.close()
    status, _ = proxy.get("/readyz")
    assert status == 200
    _, metrics = proxy.get("/metrics")
    assert 'pop3bridge_proxy_commands_total{outcome="ok",verb="AUTH"}' in metrics
    assert 'pop3bridge_proxy_sessions_total{listener="plain"}' in metrics
    # The log is written in order: once the last of these lines is there, so is every earlier
    # one (waiting on it, not on a fixed time, before checking that no secret was written).
    deadline = time.monotonic() + 10
    while not any(x.get("reason") == "too-long" for x in proxy.log_lines()):
        assert time.monotonic() < deadline, proxy.log_text()[-3000:]
        time.sleep(0.05)
    assert_no_secret(proxy, dovecot_user.password, plain_ir.decode())
    lines = proxy.log_lines()
    auth = [x for x in lines if x.get("verb") == "AUTH"]
    assert auth and all(x["arguments"][1:] in ([], ["***"]) for x in auth)
    assert any(x.get("reason") == "too-long" for x in lines)


def test_graceful_shutdown_lets_a_running_session_finish(dovecot, dovecot_user, proxy):
    import poplib

    dovecot.deliver_many(dovecot_user, generate_messages(1, seed=13))
    conn = poplib.POP3("127.0.0.1", proxy.ports["plain"], timeout=10)
    conn.user(dovecot_user.name)
    conn.pass_(dovecot_user.password)
    proxy.proc.send_signal(signal.SIGTERM)
    # New connections are refused (once the listener is closed), the open session carries on
    # to its QUIT.
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", proxy.ports["plain"]), timeout=2).recv(1)
        except OSError:
            break
        assert time.monotonic() < deadline, "the listener stayed open after SIGTERM"
        time.sleep(0.05)
    assert conn.stat()[0] == 1
    assert conn.quit().startswith(b"+OK")
    assert proxy.proc.wait(timeout=10) == 0


def test_100mb_message_relayed_with_bounded_memory(dovecot, dovecot_user, proxy) -> None:
    size = 100 * 1024 * 1024
    dovecot.deliver(dovecot_user, big_message(size))
    with RssPeak(proxy.proc.pid, interval=0.02) as rss:
        sock = socket.create_connection(("127.0.0.1", proxy.ports["plain"]), timeout=30)
        sock.sendall(
            f"USER {dovecot_user.name}\r\nPASS {dovecot_user.password}\r\nRETR 1\r\n".encode()
        )
        received = 0
        tail = b""
        while not tail.endswith(b"\r\n.\r\n"):
            chunk = sock.recv(1 << 20)
            assert chunk, "proxy closed the connection mid-message"
            received += len(chunk)
            tail = (tail + chunk)[-5:]
        sock.sendall(b"QUIT\r\n")
        sock.close()
    assert received > size
    growth = rss.growth
    print(
        f"proxy RSS baseline {rss.baseline >> 20} MiB, peak {rss.peak >> 20} MiB, "
        f"growth {growth >> 20} MiB"
    )
    assert growth < 16 * 1024 * 1024


def test_with_json_logs_every_line_the_proxy_writes_is_json(dovecot, dovecot_user, proxy):
    """`docker logs` interleaves stdout and stderr: both must parse line by line, and the bound
    ports must still be there for scripts (issue 13)."""
    import poplib

    conn = poplib.POP3("127.0.0.1", proxy.ports["plain"], timeout=10)
    conn.user(dovecot_user.name)
    conn.pass_(dovecot_user.password)
    conn.quit()
    assert proxy.stop() == 0
    assert proxy.proc.stdout is not None
    out = proxy.stdout_lines + proxy.proc.stdout.read().decode().splitlines(keepends=True)
    err = proxy.stderr_path.read_text(errors="replace").splitlines()
    lines = [ln for ln in out + err if ln.strip()]
    assert len(lines) > 5
    for line in lines:
        doc = json.loads(line)
        assert {"timestamp", "level", "logger", "message"} <= doc.keys(), line
    said = [json.loads(ln) for ln in proxy.stdout_lines]
    listening = {d["listener"]: d["port"] for d in said if d.get("event") == "listening"}
    assert listening == proxy.ports and set(listening) == {"plain", "pop3s"}
    assert [d["url"] for d in said if d.get("event") == "ops"] == [proxy.ops_url]


def test_a_listener_that_cannot_bind_is_reported_as_json(dovecot, tls_certs, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = proxy_config(dovecot, tls_certs)
        config["proxy"]["listeners"] = [
            {"name": "plain", "host": "127.0.0.1", "port": taken.getsockname()[1]}
        ]
        path = tmp_path / "proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        done = subprocess.run(
            [sys.executable, "-m", "bridge", "proxy", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stdout == ""
    docs = [json.loads(line) for line in done.stderr.splitlines()]
    assert docs and docs[-1]["level"] == "ERROR" and "plain" in docs[-1]["message"]

"""The private Dovecot fixture works as documented, checked with an independent client
(Python's poplib), never with the project's own client."""

from __future__ import annotations

import os
import poplib
import socket
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from tests.support import require_service
from tests.support.certs import TestCerts
from tests.support.dovecot import DovecotServer, DovecotUser, dovecot_available

pytestmark = pytest.mark.dovecot

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: fixture check\r\n"
    b"Message-ID: <fixture-check@example.org>\r\n"
    b"\r\n"
    b"first line\r\n"
    b".starts with a dot\r\n"
    b"last line\r\n"
)


def _retr(client: poplib.POP3, n: int) -> bytes:
    _, lines, _ = client.retr(n)
    return b"\r\n".join(lines) + b"\r\n"


def test_plain_port_serves_delivered_mail(
    dovecot: DovecotServer, dovecot_user: DovecotUser
) -> None:
    path = dovecot.deliver(dovecot_user, MESSAGE)
    assert path.parent.name == "new" and path.read_bytes() == MESSAGE
    assert dovecot.message_count(dovecot_user) == 1
    client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
    try:
        caps = client.capa()
        assert "STLS" in caps and "UIDL" in caps
        assert {"PLAIN", "LOGIN", "CRAM-MD5"} <= set(caps["SASL"])
        client.user(dovecot_user.name)
        client.pass_(dovecot_user.password)
        assert client.stat() == (1, len(MESSAGE))
        assert _retr(client, 1) == MESSAGE  # poplib un-stuffs the leading dot
        _, listing, _ = client.uidl()
        uid = listing[0].split()[1].decode()
        assert len(uid) == 16 and int(uid, 16) > 0  # pop3_uidl_format = %08Xu%08Xv
    finally:
        client.quit()


def test_pop3s_certificate_verifies_against_ca_file(
    dovecot: DovecotServer, dovecot_user: DovecotUser
) -> None:
    dovecot.deliver(dovecot_user, MESSAGE)
    ctx = ssl.create_default_context(cafile=str(dovecot.ca_file))
    client = poplib.POP3_SSL("localhost", dovecot.pop3s_port, context=ctx, timeout=10)
    try:
        assert isinstance(client.sock, ssl.SSLSocket) and client.sock.getpeercert()
        client.user(dovecot_user.name)
        client.pass_(dovecot_user.password)
        assert _retr(client, 1) == MESSAGE
    finally:
        client.quit()


def test_pop3s_rejected_by_unrelated_ca(dovecot: DovecotServer, tls_certs: TestCerts) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL(
            dovecot.host, dovecot.pop3s_port, context=tls_certs.wrong_client_context(), timeout=10
        )


def test_stls_then_apop(dovecot: DovecotServer, dovecot_user: DovecotUser) -> None:
    dovecot.deliver_many(dovecot_user, [MESSAGE, MESSAGE.replace(b"first", b"second")])
    client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
    try:
        assert b"<" in client.getwelcome()  # APOP timestamp present
        client.stls(context=dovecot.certs.client_context())
        client.apop(dovecot_user.name, dovecot_user.password)
        assert client.stat()[0] == 2
        assert b"second line" in _retr(client, 2)  # delivery order is preserved
    finally:
        client.quit()


def test_wrong_password_is_refused(dovecot: DovecotServer, dovecot_user: DovecotUser) -> None:
    client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
    try:
        client.user(dovecot_user.name)
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client.pass_(dovecot_user.password + "x")
    finally:
        client.quit()


def test_dele_commits_only_on_quit(dovecot: DovecotServer, dovecot_user: DovecotUser) -> None:
    dovecot.deliver_many(dovecot_user, [MESSAGE, MESSAGE])
    # DELE then drop the connection: nothing is deleted.
    client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
    client.user(dovecot_user.name)
    client.pass_(dovecot_user.password)
    client.dele(1)
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()
    client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
    client.user(dovecot_user.name)
    client.pass_(dovecot_user.password)
    assert client.stat()[0] == 2
    client.dele(1)
    client.quit()
    assert dovecot.message_count(dovecot_user) == 1


def test_users_are_isolated(dovecot: DovecotServer) -> None:
    a = dovecot.add_user()
    b = dovecot.add_user("named-user", "pass word with spaces")
    dovecot.deliver(a, MESSAGE)
    client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
    try:
        client.user(b.name)
        client.pass_(b.password)
        assert client.stat() == (0, 0)
    finally:
        client.quit()
    assert dovecot.message_count(a) == 1 and dovecot.message_count("named-user") == 0


def test_restart_keeps_ports_and_mail(dovecot: DovecotServer, dovecot_user: DovecotUser) -> None:
    dovecot.deliver(dovecot_user, MESSAGE)
    ports = (dovecot.pop3_port, dovecot.pop3s_port)
    try:
        dovecot.stop()
        with pytest.raises(OSError):
            socket.create_connection((dovecot.host, dovecot.pop3_port), timeout=2).close()
    finally:
        dovecot.start()
    assert (dovecot.pop3_port, dovecot.pop3s_port) == ports
    client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
    try:
        client.user(dovecot_user.name)
        client.pass_(dovecot_user.password)
        assert client.stat()[0] == 1
    finally:
        client.quit()
    assert "starting up" in dovecot.log_text()


def test_config_validates_and_stays_private(dovecot: DovecotServer) -> None:
    shown = dovecot.validate_config()
    assert f"base_dir = {dovecot.base_dir}" in shown
    assert "listen = 127.0.0.1" in shown
    assert "/etc/dovecot" not in dovecot.config_file.read_text()


def _inner_session(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    project_conftest = Path(__file__).parents[1] / "conftest.py"
    (tmp_path / "conftest.py").write_text(f"exec(open({str(project_conftest)!r}).read())\n")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-qs", "-rsE", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 error"), ("", "1 skipped")])
def test_missing_dovecot_fails_in_ci_and_skips_otherwise(
    tmp_path: Path, ci: str, outcome: str
) -> None:
    (tmp_path / "test_inner.py").write_text("def test_it(dovecot):\n    pass\n")
    proc = _inner_session(tmp_path, {"CI": ci, "POP3BRIDGE_TEST_DOVECOT": "/nonexistent/dovecot"})
    assert outcome in proc.stdout, proc.stdout + proc.stderr
    assert (proc.returncode != 0) == (ci == "true")
    assert "dovecot is required but not usable" in proc.stdout


def test_no_dovecot_left_after_session(tmp_path: Path) -> None:
    """Run a whole pytest session that uses the fixture; afterwards none of its processes live."""
    # The inner session runs with CI=true so that it cannot pass by skipping; that is only
    # fair when this machine has a Dovecot (else this test skips, or fails under CI=true).
    ok, why = dovecot_available()
    require_service("dovecot", ok, why)
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            """
            import os
            def test_it(dovecot):
                os.write(1, f"INNER-CONFIG={dovecot.config_file}\\n".encode())
                os.write(1, f"INNER-INSTANCE={dovecot.instance_name}\\n".encode())
            """
        )
    )
    proc = _inner_session(tmp_path, {"CI": "true"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    marker = next(line for line in proc.stdout.splitlines() if "INNER-CONFIG=" in line)
    config = marker.split("INNER-CONFIG=", 1)[1].strip()
    marker = next(line for line in proc.stdout.splitlines() if "INNER-INSTANCE=" in line)
    instance = marker.split("INNER-INSTANCE=", 1)[1].strip()
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(config in part or instance in part for part in (p.info["cmdline"] or []))
    ]
    assert leftovers == []
    assert not Path(config).exists()  # the temporary tree was removed too

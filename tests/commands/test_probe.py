"""`pop3bridge probe` against the private Dovecot: JSON fields and exit codes 0/2/3."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.dovecot


def probe(*args: str, secret: str) -> tuple[int, dict[str, object]]:
    env = {**os.environ, "PROBE_SECRET": secret}
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "probe", *args, "--password-env", "PROBE_SECRET"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert secret not in proc.stdout and secret not in proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_probe_ok_over_pop3s(dovecot, dovecot_user) -> None:
    dovecot.deliver_many(dovecot_user, [b"Subject: a\r\n\r\nx\r\n", b"Subject: b\r\n\r\ny\r\n"])
    url = f"pop3s://{dovecot_user.name}@127.0.0.1:{dovecot.pop3s_port}"
    code, out = probe(url, "--ca-file", str(dovecot.ca_file), secret=dovecot_user.password)
    assert code == 0, out
    assert out["ok"] is True
    assert out["message_count"] == 2 and out["total_size"] > 0
    assert len(out["first_uidls"]) == 2  # type: ignore[arg-type]
    assert out["tls_version"] in ("TLSv1.2", "TLSv1.3") and out["tls_cipher"]
    assert out["mechanism"] and "UIDL" in out["capabilities"]  # type: ignore[operator]
    assert str(out["greeting"])


def test_probe_starttls_plain(dovecot, dovecot_user) -> None:
    url = f"pop3://{dovecot_user.name}@127.0.0.1:{dovecot.pop3_port}"
    code, out = probe(
        url,
        "--starttls",
        "--auth",
        "PLAIN",
        "--ca-file",
        str(dovecot.ca_file),
        secret=dovecot_user.password,
    )
    assert code == 0, out
    assert out["mechanism"] == "PLAIN" and out["message_count"] == 0


def test_probe_wrong_password_exit_2(dovecot, dovecot_user) -> None:
    url = f"pop3s://{dovecot_user.name}@127.0.0.1:{dovecot.pop3s_port}"
    code, out = probe(url, "--ca-file", str(dovecot.ca_file), secret="not-the-password")
    assert code == 2 and out["error"]["kind"] == "AuthenticationFailed"  # type: ignore[index]


def test_probe_plaintext_refused_exit_2(dovecot, dovecot_user) -> None:
    url = f"pop3://{dovecot_user.name}@127.0.0.1:{dovecot.pop3_port}"
    code, out = probe(url, "--auth", "USER", secret=dovecot_user.password)
    assert code == 2 and out["error"]["kind"] == "InsecureAuthRefused"  # type: ignore[index]


def test_probe_wrong_ca_and_closed_port_exit_3(dovecot, dovecot_user, tls_certs) -> None:
    url = f"pop3s://{dovecot_user.name}@127.0.0.1:{dovecot.pop3s_port}"
    code, out = probe(url, "--ca-file", str(tls_certs.other_ca_file), secret="x")
    assert code == 3 and out["error"]["kind"] == "TLSFailure"  # type: ignore[index]
    from tests.support.dovecot import free_port

    code, out = probe(f"pop3://u@127.0.0.1:{free_port()}", secret="x")
    assert code == 3 and out["error"]["kind"] == "ConnectionLost"  # type: ignore[index]

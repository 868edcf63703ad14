"""`pop3bridge probe` failures: one line on stderr, the documented exit code, no traceback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.testing.fakepop3 import FakePOP3Server, Faults


async def probe(*args: str, password_file: str | None = None) -> tuple[int, dict[str, Any], str]:
    extra = ["--password-file", password_file] if password_file else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "probe",
        *args,
        *extra,
        stdin=subprocess.DEVNULL,  # no terminal: there must be no prompt
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, json.loads(out), err.decode()


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


async def test_no_password_and_no_terminal_is_a_message_not_a_traceback() -> None:
    code, out, err = await probe("pop3://user@127.0.0.1:1", "--allow-plaintext")
    assert code == 1 and out["error"]["kind"] == "CannotStart"
    assert "--password-file" in one_line(err) and "--password-env" in err


async def test_a_missing_password_file_is_exit_1_not_a_connection_failure(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    code, _, err = await probe("pop3://user@127.0.0.1:1", password_file=missing)
    assert code == 1 and missing in one_line(err) and "No such file" in err


async def test_a_port_out_of_range_is_named() -> None:
    code, _, err = await probe("pop3://user@127.0.0.1:99999", "--password-env", "HOME")
    assert code == 1 and "99999" in one_line(err) and "range" in err


async def test_a_connection_dropped_during_login_is_exit_3(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("password\n")
    # Answers CAPA and USER, then hangs up: the network's fault as far as anyone can tell.
    async with FakePOP3Server([], faults=Faults(close_after_commands=2)) as fake:
        url = f"pop3://user@127.0.0.1:{fake.port}"
        args = (url, "--auth", "user", "--allow-plaintext")
        code, out, err = await probe(*args, password_file=str(tmp_path / "pw"))
    assert code == 3, (out, err)
    assert out["error"]["kind"] == "ConnectionLost"
    assert "closed the connection" in one_line(err)


async def test_a_wrong_password_is_still_exit_2(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("wrong\n")
    async with FakePOP3Server([]) as fake:
        url = f"pop3://user@127.0.0.1:{fake.port}"
        args = (url, "--auth", "user", "--allow-plaintext")
        code, out, err = await probe(*args, password_file=str(tmp_path / "pw"))
    assert code == 2 and out["error"]["kind"] == "AuthenticationFailed"
    assert one_line(err).startswith("pop3bridge probe: authentication failed:")


@pytest.mark.parametrize("flag", ["--help"])
def test_help_lists_exit_codes_and_the_default_timeout(flag: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "probe", flag],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0
    for code in ("0 ", "1 ", "2 ", "3 ", "4 "):
        assert f"\n  {code}" in proc.stdout
    assert "default: 30" in proc.stdout and "30 seconds" in proc.stdout


async def test_a_forced_mechanism_the_server_does_not_offer_is_one_clear_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "pw").write_text("password\n")
    async with FakePOP3Server([]) as fake:  # offers SASL PLAIN LOGIN, APOP (timestamp), USER
        url = f"pop3://user@127.0.0.1:{fake.port}"
        args = (url, "--auth", "cram-md5", "--allow-plaintext")
        code, _, err = await probe(*args, password_file=str(tmp_path / "pw"))
        assert not [c for c in fake.commands_seen if c[0] == "AUTH"]  # never sent
    assert code == 2
    assert "does not offer CRAM-MD5; it offers USER, APOP, PLAIN, LOGIN" in one_line(err)

"""`POP3BRIDGE_EVENT_LOOP`: asyncio by default (uvloop for `proxy` and `run` when installed),
either on request, a clear exit 2 otherwise."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.cli import EVENT_LOOP_ENV, EventLoopUnavailable, main, use_event_loop
from bridge.testing.samples import generate_messages
from tests.support.dovecot import DovecotServer, DovecotUser

POP3BRIDGE = str(Path(sys.executable).parent / "pop3bridge")


@pytest.fixture
def restore_policy() -> Iterator[None]:
    before = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(before)


def test_default_is_asyncio_and_leaves_the_policy_alone(restore_policy: None) -> None:
    before = asyncio.get_event_loop_policy()
    assert use_event_loop({}) == "asyncio"
    assert use_event_loop({EVENT_LOOP_ENV: " AsyncIO "}) == "asyncio"
    assert asyncio.get_event_loop_policy() is before


def test_unknown_loop_is_refused(restore_policy: None) -> None:
    with pytest.raises(EventLoopUnavailable, match="'asyncio' or 'uvloop', not 'trio'"):
        use_event_loop({EVENT_LOOP_ENV: "trio"})


def test_cli_exits_2_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], restore_policy: None
) -> None:
    monkeypatch.setenv(EVENT_LOOP_ENV, "bogus")
    assert main(["config", "reference"]) == 2
    assert f"{EVENT_LOOP_ENV} must be 'asyncio' or 'uvloop'" in capsys.readouterr().err


def test_uvloop_policy_is_installed(restore_policy: None) -> None:
    uvloop = pytest.importorskip("uvloop")
    assert use_event_loop({EVENT_LOOP_ENV: "uvloop"}) == "uvloop"
    assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)


def test_probe_on_uvloop_against_dovecot(
    dovecot: DovecotServer, dovecot_user: DovecotUser, tmp_path: Path
) -> None:
    """The POP3 client's transport handling works on uvloop's transports (TLS included)."""
    pytest.importorskip("uvloop")
    dovecot.deliver_many(dovecot_user, generate_messages(3, seed=1))
    pw = tmp_path / "pw"
    pw.write_text(dovecot_user.password)
    url = f"pop3s://{dovecot_user.name}@{dovecot.host}:{dovecot.pop3s_port}"
    out = subprocess.run(
        [POP3BRIDGE, "probe", url, "--password-file", str(pw), "--ca-file", str(dovecot.ca_file)],
        capture_output=True,
        text=True,
        env={**os.environ, EVENT_LOOP_ENV: "uvloop"},
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["message_count"] == 3, report
    assert report["tls_version"], report


@pytest.mark.parametrize("command", ["proxy", "run"])
def test_proxy_and_run_default_to_uvloop_when_installed(command: str, restore_policy: None) -> None:
    uvloop = pytest.importorskip("uvloop")
    assert use_event_loop({}, command) == "uvloop"
    assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
    # ...every other command stays on asyncio, and the variable overrides either default.
    asyncio.set_event_loop_policy(None)
    before = asyncio.get_event_loop_policy()
    for other in ("once", "peek", "probe", "replay", "demo"):
        assert use_event_loop({}, other) == "asyncio"
    assert use_event_loop({EVENT_LOOP_ENV: "asyncio"}, command) == "asyncio"
    assert asyncio.get_event_loop_policy() is before


@pytest.mark.parametrize("command", ["proxy", "run"])
def test_without_uvloop_installed_proxy_and_run_use_asyncio(
    command: str, monkeypatch: pytest.MonkeyPatch, restore_policy: None
) -> None:
    import bridge.cli

    monkeypatch.setattr(bridge.cli, "_has_uvloop", lambda: False)
    before = asyncio.get_event_loop_policy()
    assert use_event_loop({}, command) == "asyncio"
    assert asyncio.get_event_loop_policy() is before

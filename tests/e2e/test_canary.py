"""The freshness canary through a real `pop3bridge run`: submitted over Dovecot's LMTP into the
polled mailbox, fetched, timed, deleted (even with `on_delivered: keep`) and never POSTed; with
the receiver down it still measures the mailbox path, and /status and the page show both."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bridge.testing.samples import generate_messages
from tests.e2e.harness import Receiver, dovecot_account
from tests.e2e.test_ops import Bridge, fetch, run_config
from tests.support import require_service
from tests.support.dovecot import DovecotServer, DovecotUser

pytestmark = pytest.mark.dovecot


def _lmtp(dovecot: DovecotServer) -> int:
    port = dovecot.lmtp_port
    require_service("dovecot-lmtpd", port is not None, "apt-get install dovecot-lmtpd")
    assert port is not None
    return port


@pytest.mark.parametrize("receiver_up", [True, False], ids=["receiver-up", "receiver-down"])
def test_canary_round_trip_through_lmtp(
    tmp_path: Path,
    dovecot: DovecotServer,
    dovecot_user: DovecotUser,
    receiver: Receiver,
    bridges: list[Bridge],
    receiver_up: bool,
) -> None:
    lmtp = _lmtp(dovecot)
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=1601))
    account = dovecot_account(
        dovecot,
        dovecot_user,
        on_delivered="keep",
        canary={"smtp": f"lmtp://127.0.0.1:{lmtp}", "every": "1h", "max_age": "1m"},
    )
    cfg = tmp_path / "c.yaml"
    port = run_config(cfg, f"sqlite:///{tmp_path / 's.db'}", receiver, [account])
    if not receiver_up:
        receiver.stop()
    bridge = Bridge(cfg, port)
    bridges.append(bridge)
    name = account["name"]

    def canary() -> dict[str, object]:
        got = bridge.status()["accounts"].get(name, {}).get("canary") or {}
        assert isinstance(got, dict)
        return got

    bridge.wait("the canary's round trip", lambda: canary().get("state") == "ok")
    seen = canary()
    trip = seen["last_round_trip"]
    assert isinstance(trip, float) and 0 <= trip < 30
    assert seen["age"] == 0
    m = bridge.metrics()
    assert m.value("pop3bridge_canary_round_trip_seconds", account=name) == pytest.approx(trip)
    assert m.value("pop3bridge_canary_age_seconds", account=name) == 0
    assert m.value("pop3bridge_canary_max_age_seconds", account=name) == 60
    # Deleted from the server although the account keeps mail: only the two real ones remain.
    bridge.wait("the canary deleted", lambda: dovecot.message_count(dovecot_user) == 2)
    status = bridge.status()["accounts"][name]
    if receiver_up:
        bridge.wait("2 deliveries", lambda: len(receiver.delivered) == 2)
        subjects = [r.json["data"]["subject"] for r in receiver.verified]
        assert not any("canary" in str(s) for s in subjects), subjects
    else:
        # The mailbox path is fine while delivery is not: the status shows both.
        bridge.wait("2 pending", lambda: bridge.status()["accounts"][name]["pending"] == 2)
        status = bridge.status()["accounts"][name]
        assert status["pending"] == 2 and status["canary"]["state"] == "ok"
    code, page = fetch(bridge.base + "/")
    assert code == 200 and "canary" in page.lower()
    assert bridge.stop() == 0


def test_canary_that_never_arrives_is_stale(
    tmp_path: Path,
    dovecot: DovecotServer,
    dovecot_user: DovecotUser,
    receiver: Receiver,
    bridges: list[Bridge],
) -> None:
    lmtp = _lmtp(dovecot)
    # Submitted into another user's mailbox: it never reaches the polled one.
    elsewhere = dovecot.add_user()
    account = dovecot_account(
        dovecot,
        dovecot_user,
        canary={
            "smtp": f"lmtp://127.0.0.1:{lmtp}",
            "to": f"{elsewhere.name}@example.com",
            "every": "1h",
            "max_age": "1s",
        },
    )
    cfg = tmp_path / "c.yaml"
    port = run_config(cfg, f"sqlite:///{tmp_path / 's.db'}", receiver, [account])
    bridge = Bridge(cfg, port)
    bridges.append(bridge)
    name = account["name"]
    bridge.wait(
        "a stale canary",
        lambda: (
            (bridge.status()["accounts"].get(name, {}).get("canary") or {}).get("state") == "stale"
        ),
    )
    assert bridge.metrics().value("pop3bridge_canary_age_seconds", account=name) > 1
    assert dovecot.message_count(elsewhere) == 1
    assert bridge.stop() == 0


def test_config_check_refuses_a_bad_canary_url(tmp_path: Path, receiver: Receiver) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "c.yaml"
    run_config(
        cfg,
        f"sqlite:///{tmp_path / 's.db'}",
        receiver,
        [{"name": "a", "host": "127.0.0.1", "username": "u", "password": "p", "webhook": "main",
          "canary": {"smtp": "http://127.0.0.1:25"}}],
    )  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "config", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert "canary.smtp" in out.stderr and "lmtp://" in out.stderr
    assert yaml.safe_load(cfg.read_text())["accounts"][0]["canary"]["smtp"].startswith("http")

"""The other poller subcommands through the real CLI: demo, peek, dlq, accounts, bad config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.testing.samples import generate_messages
from tests.e2e.harness import Receiver, dovecot_account, write_config
from tests.e2e.test_guarantees import once
from tests.support.dovecot import DovecotServer, DovecotUser


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_demo_shows_signed_webhooks_and_new_mail_arriving() -> None:
    proc = cli("demo", "--duration", "8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("webhook ")]
    # 5 sample messages, then one more dropped in while running
    assert len(lines) >= 6
    assert all("signature verified" in ln for ln in lines)
    assert "a new message was dropped" in proc.stdout
    assert len({ln.split("webhook-id=")[1].split()[0] for ln in lines}) == len(lines)


@pytest.mark.dovecot
def test_peek_prints_payloads_and_changes_nothing(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: DovecotUser, receiver: Receiver
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(4, seed=95))
    acct = dovecot_account(dovecot, dovecot_user, on_delivered="delete")
    db = tmp_path / "s.db"
    cfg = write_config(tmp_path / "c.yaml", db=db, receiver=receiver, accounts=[acct])
    proc = cli("peek", "--config", str(cfg), "--account", acct["name"], "--limit", "3")
    assert proc.returncode == 0, proc.stderr
    bodies = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert len(bodies) == 3 and all(b["type"] == "message.received" for b in bodies)
    assert not db.exists() and receiver.verified == []
    assert dovecot.message_count(dovecot_user) == 4

    bad = cli("peek", "--config", str(cfg), "--account", "nope")
    assert bad.returncode == 2 and "no account named 'nope'" in bad.stderr


@pytest.mark.dovecot
def test_dead_letters_are_listed_and_replayed(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: DovecotUser, receiver: Receiver
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=96))
    acct = dovecot_account(dovecot, dovecot_user)
    cfg = write_config(
        tmp_path / "c.yaml", db=tmp_path / "s.db", receiver=receiver, accounts=[acct]
    )
    receiver.fail_next(2, status=410)  # permanent: dead-lettered at once
    rc, summary = once(cfg)
    assert rc == 1
    listed = cli("dlq", "--config", str(cfg), "list", "--json")
    rows = [json.loads(ln) for ln in listed.stdout.splitlines()]
    assert listed.returncode == 0 and len(rows) == 2
    assert {r["last_status"] for r in rows} == {410}
    replay = cli("dlq", "--config", str(cfg), "replay", str(rows[0]["id"]))
    assert replay.returncode == 0 and "replayed 1" in replay.stdout
    assert cli("dlq", "--config", str(cfg), "replay", "--all").returncode == 0
    rc, summary = once(cfg)
    assert rc == 0, summary
    assert len(receiver.delivered_ids) == 2
    assert cli("dlq", "--config", str(cfg), "list", "--json").stdout.strip() == ""


@pytest.mark.dovecot
def test_accounts_added_to_the_database_are_polled(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: DovecotUser, receiver: Receiver
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=97))
    pw = tmp_path / "pw"
    pw.write_text(dovecot_user.password + "\n")
    cfg = write_config(
        tmp_path / "c.yaml",
        db=tmp_path / "s.db",
        receiver=receiver,
        accounts=[],
        poller={"accounts_from_db": True},
    )
    add = cli(
        "accounts",
        "--config",
        str(cfg),
        "add",
        "dbacct",
        "--url",
        f"pop3s://{dovecot_user.name}@{dovecot.host}:{dovecot.pop3s_port}",
        "--webhook",
        "main",
        "--password-file",
        str(pw),
        "--set",
        f"ca_file={dovecot.ca_file}",
        "--set",
        "poll_interval=5",
    )
    assert add.returncode == 0, add.stderr
    listed = cli("accounts", "--config", str(cfg), "list")
    assert json.loads(listed.stdout)["name"] == "dbacct"
    assert dovecot_user.password not in listed.stdout
    rc, summary = once(cfg)
    assert rc == 0 and summary["accounts"]["dbacct"]["new"] == 2, summary
    assert cli("accounts", "--config", str(cfg), "remove", "dbacct").returncode == 0
    assert cli("accounts", "--config", str(cfg), "remove", "dbacct").returncode == 1


def test_invalid_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("webhooks: 3\n")
    for cmd in (
        ["once"],
        ["run"],
        ["dlq", "list"],
        ["accounts", "list"],
        ["peek", "--account", "x"],
    ):
        proc = cli(cmd[0], "--config", str(bad), *cmd[1:])
        assert proc.returncode == 2, (cmd, proc.stderr)

"""Small things a newcomer trips over (issue 12, item 11): each through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bridge.cli import main
from bridge.store.factory import sqlite_path
from bridge.testing.samples import generate_messages
from tests.e2e.harness import Receiver, dovecot_account, write_config
from tests.e2e.test_commands import cli
from tests.e2e.test_guarantees import once
from tests.support.dovecot import DovecotServer, DovecotUser


def _state_only(tmp_path: Path) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"state": {"url": f"sqlite:///{tmp_path / 's.db'}"}}))
    return str(path)


def test_sqlite_url_of_an_absolute_path_has_one_leading_slash() -> None:
    # f"sqlite:///{absolute}" gives four slashes; logs said "SQLite store //tmp/...".
    assert sqlite_path("sqlite:////tmp/state.db") == "/tmp/state.db"
    assert sqlite_path("sqlite:///tmp/state.db") == "/tmp/state.db"
    assert sqlite_path("sqlite:///:memory:") == ":memory:"


def test_a_port_out_of_range_is_named_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {
        "state": {"url": f"sqlite:///{tmp_path / 's.db'}"},
        "webhooks": [
            {"name": "main", "url": "https://example.com/h", "secret": "whsec_" + "A" * 32}
        ],
        "accounts": [
            {
                "name": "a",
                "url": "pop3s://u@mail.example.com:99999",
                "password": "x",
                "webhook": "main",
            }
        ],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["config", "check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "between 0 and 65535" in err and "is the port a number" not in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["dlq", "list", "--help"], ["--limit N", "at most N dead letters"]),
        (["dlq", "replay", "--help"], ["first column of `dlq list`", "msg_"]),
    ],
)
def test_dlq_arguments_have_help(
    argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(argv)
    out = capsys.readouterr().out
    assert all(w in out for w in words), out


def test_an_empty_accounts_list_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["accounts", "list", "--config", _state_only(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "no accounts in the database" in err


@pytest.mark.dovecot
def test_dlq_replay_takes_the_webhook_id_too(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: DovecotUser, receiver: Receiver
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=1211))
    acct = dovecot_account(dovecot, dovecot_user)
    cfg = write_config(
        tmp_path / "c.yaml", db=tmp_path / "s.db", receiver=receiver, accounts=[acct]
    )
    receiver.fail_next(2, status=410)  # permanent: dead-lettered at once
    assert once(cfg)[0] == 1
    rows = [
        json.loads(ln)
        for ln in cli("dlq", "list", "--json", "--config", str(cfg)).stdout.splitlines()
    ]
    assert len(rows) == 2
    replay = cli("dlq", "replay", rows[1]["msg_id"], "--config", str(cfg))
    assert replay.returncode == 0 and "replayed 1" in replay.stdout, replay.stderr
    left = [
        json.loads(ln)
        for ln in cli("dlq", "list", "--json", "--config", str(cfg)).stdout.splitlines()
    ]
    assert [r["msg_id"] for r in left] == [rows[0]["msg_id"]]
    bad = cli("dlq", "replay", "nonsense", "--config", str(cfg))
    assert bad.returncode == 1 and "neither a dead-letter number nor a msg_" in bad.stderr

"""`once` reports what happened in its own run, and logs failures and deliveries like `run`.

Against the private Dovecot and the signature-verifying receiver, through the real CLI.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from bridge.testing.samples import generate_messages
from tests.e2e.harness import Receiver, dovecot_account, write_config
from tests.e2e.test_guarantees import once_logged
from tests.support.dovecot import DovecotServer, DovecotUser

pytestmark = pytest.mark.dovecot


def _log_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in stderr.splitlines() if ln.startswith("{")]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_once_counts_this_runs_deliveries_and_logs_each(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: DovecotUser, receiver: Receiver
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(5, seed=1201))
    acct = dovecot_account(dovecot, dovecot_user)
    cfg = write_config(
        tmp_path / "c.yaml", db=tmp_path / "s.db", receiver=receiver, accounts=[acct]
    )
    rc, summary, stderr = once_logged(cfg)
    assert rc == 0, stderr[-2000:]
    assert len(receiver.delivered_ids) == 5
    # The old summary counted the last (empty) pass: "delivered": 0.
    assert (summary["delivered"], summary["retry_later"], summary["dead_lettered"]) == (5, 0, 0)
    assert summary["accounts_failed"] == [] and summary["pending"] == 0
    # Deliveries are logged as an INFO summary (a line per message would cost a quarter of
    # the throughput: bridge/delivery/summary.py), never a louder line per failed attempt.
    info = [r for r in _log_lines(stderr) if r["level"] == "INFO"]
    summaries = [r for r in info if r["message"].startswith("deliveries:")]
    assert sum(r["delivered"] for r in summaries) == 5
    assert sum(r["retry"] + r["dead"] for r in summaries) == 0
    assert all(r["ms_avg"] > 0 and r["accounts"] == 1 for r in summaries)  # timed


def test_once_with_the_receiver_down_reports_retries_not_deliveries(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: DovecotUser, receiver: Receiver
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(3, seed=1202))
    acct = dovecot_account(dovecot, dovecot_user)
    cfg = write_config(
        tmp_path / "c.yaml", db=tmp_path / "s.db", receiver=receiver, accounts=[acct]
    )
    receiver.stop()  # every connection refused
    try:
        rc, summary, stderr = once_logged(cfg)
    finally:
        receiver.start()
    assert rc == 1
    # The old summary said "delivered": 3 here (the attempts of its last pass).
    assert (summary["delivered"], summary["retry_later"], summary["dead_lettered"]) == (0, 3, 0)
    assert summary["pending"] == 3 and summary["accounts_failed"] == []
    lines = _log_lines(stderr)
    summaries = [r for r in lines if r["message"].startswith("deliveries:")]
    assert sum(r["delivered"] for r in summaries) == 0
    assert sum(r["retry"] for r in summaries) >= 3 and summaries[-1]["last_error"]
    # Failed attempts are no louder than successes: no INFO (or worse) line of their own.
    worker = [r for r in lines if r["logger"] == "bridge.delivery.worker"]
    assert worker == summaries, worker


def test_once_logs_a_failed_poll_at_error_and_names_the_account(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: DovecotUser, receiver: Receiver
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(1, seed=1203))
    good = dovecot_account(dovecot, dovecot_user)
    bad = {**good, "name": "unreachable", "port": _closed_port()}
    cfg = write_config(
        tmp_path / "c.yaml", db=tmp_path / "s.db", receiver=receiver, accounts=[good, bad]
    )
    rc, summary, stderr = once_logged(cfg)
    assert rc == 1
    assert summary["accounts_failed"] == ["unreachable"] and summary["delivered"] == 1
    assert "error" in summary["accounts"]["unreachable"]
    errors = [r for r in _log_lines(stderr) if r["level"] == "ERROR"]
    assert [r["account"] for r in errors] == ["unreachable"]
    assert errors[0]["message"].startswith("poll failed")

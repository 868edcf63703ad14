"""SIGKILL the running bridge at random moments; after restarts every message still arrives,
none is deleted from Dovecot before the receiver acknowledged it, and duplicates (only from the
window between a 2xx and recording it) carry the same webhook-id. Also: SIGTERM exits 0."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bridge.testing.samples import generate_messages
from tests.e2e.harness import Receiver, dovecot_account, write_config
from tests.e2e.test_guarantees import once, once_until_ok
from tests.support.dovecot import DovecotServer, DovecotUser

pytestmark = pytest.mark.dovecot

TOTAL = 80


def start_bridge(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "--config", str(config)],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def test_sigkill_at_random_moments_loses_and_deletes_nothing(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: DovecotUser, receiver: Receiver
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(TOTAL, seed=91, size=3000))
    acct = dovecot_account(dovecot, dovecot_user, on_delivered="delete", poll_interval=0.5)
    cfg = write_config(
        tmp_path / "c.yaml",
        db=tmp_path / "s.db",
        receiver=receiver,
        accounts=[acct],
        webhook={"max_attempts": 50},
    )
    violations: list[tuple[int, int]] = []
    done = threading.Event()

    def watch() -> None:
        # Server count first, then deliveries: both are monotone, so a message missing from
        # the server must already be among the acknowledged deliveries.
        while not done.is_set():
            on_server = dovecot.message_count(dovecot_user)
            delivered = len(receiver.delivered_ids)
            if on_server + delivered < TOTAL:
                violations.append((on_server, delivered))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rng = random.Random(os.getpid())
    try:
        for round_ in range(5):
            if round_ == 2:
                receiver.clear_script()  # exactly five failures pending from here
                receiver.fail_next(5)  # some retries pending when the next kill lands
            proc = start_bridge(cfg, tmp_path / "bridge.log")
            time.sleep(rng.uniform(0.4, 2.5))  # the stimulus: SIGKILL at a random moment
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        once_until_ok(cfg)
        once(cfg)  # delete what the last run delivered but had no session left to DELE
    finally:
        done.set()
        watcher.join(5)

    assert violations == [], "messages left the server before the receiver acknowledged them"
    ids = receiver.delivered_ids
    assert len(ids) == TOTAL, (tmp_path / "bridge.log").read_text()[-3000:]
    # A duplicate is the same message: same webhook-id and the same data.id inside.
    for r in receiver.delivered:
        assert r.json["data"]["id"] == r.msg_id
    assert dovecot.message_count(dovecot_user) == 0
    assert receiver.invalid == 0


def test_sigterm_stops_cleanly_with_exit_0(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: DovecotUser, receiver: Receiver
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(20, seed=92))
    acct = dovecot_account(dovecot, dovecot_user, poll_interval=0.5)
    cfg = write_config(
        tmp_path / "c.yaml", db=tmp_path / "s.db", receiver=receiver, accounts=[acct]
    )
    proc = start_bridge(cfg, tmp_path / "bridge.log")
    deadline = time.monotonic() + 30
    while len(receiver.delivered_ids) < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(receiver.delivered_ids) == 20
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, (tmp_path / "bridge.log").read_text()[-3000:]
    # keep mode: the mailbox is untouched
    assert dovecot.message_count(dovecot_user) == 20

"""The delivery guarantees, shown with the real CLI (`python -m bridge once`) against a private
Dovecot and a real aiohttp receiver that verifies signatures with `standardwebhooks`."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import psutil
import pytest

from bridge import mail
from bridge.delivery.ids import msg_id_for
from bridge.testing.samples import generate_messages
from tests.e2e.harness import Receiver, dovecot_account, write_config
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.wait import wait_until_sync

pytestmark = pytest.mark.dovecot


def once(config: Path, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    rc, summary, _ = once_logged(config, timeout)
    return rc, summary


def once_logged(
    config: Path, timeout: float = 60, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "once", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no summary; rc={proc.returncode} stderr={proc.stderr[-2000:]}"
    return proc.returncode, json.loads(lines[-1]), proc.stderr


def once_until_ok(config: Path, deadline: float = 40) -> int:
    end = time.monotonic() + deadline
    runs = 0
    while True:
        runs += 1
        rc, _ = once(config)
        if rc == 0 or time.monotonic() > end:
            assert rc == 0, "the outbox did not drain"
            return runs
        time.sleep(0.5)


def setup(
    tmp_path: Path,
    dovecot: DovecotServer,
    user: DovecotUser,
    receiver: Receiver,
    poller: dict[str, Any] | None = None,
    **account: Any,
) -> tuple[Path, str]:
    acct = dovecot_account(dovecot, user, **account)
    cfg = write_config(
        tmp_path / "c.yaml",
        db=tmp_path / "s.db",
        receiver=receiver,
        accounts=[acct],
        webhook={"max_attempts": 50},
        poller=poller,
    )
    return cfg, acct["name"]


_RUN_MARK = "POP3BRIDGE_TEST_RUN"


def _descendants_of_run(mark: str) -> set[int]:
    """Parse workers started by the `once` run that carries `mark` in its environment, which
    they inherit. Other processes on the machine (another test session's workers) do not
    count, so the check does not depend on what else runs."""
    found = set()
    for p in psutil.process_iter(["cmdline"]):
        if "bridge.outbox._worker" not in " ".join(p.info["cmdline"] or []):
            continue
        with contextlib.suppress(psutil.Error):
            if p.environ().get(_RUN_MARK) == mark and p.status() != psutil.STATUS_ZOMBIE:
                found.add(p.pid)
    return found


def test_every_message_once_then_only_new_mail(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: DovecotUser, receiver: Receiver
) -> None:
    msgs = generate_messages(12, seed=81)
    dovecot.deliver_many(dovecot_user, msgs)
    cfg, name = setup(tmp_path, dovecot, dovecot_user, receiver)

    rc, summary = once(cfg)
    assert rc == 0, summary
    assert summary["accounts"][name]["new"] == 12
    ids = receiver.delivered_ids
    assert len(ids) == 12 and set(ids.values()) == {1}
    for r in receiver.delivered:
        jsonschema.validate(r.json, mail.schema())
        assert r.json["data"]["id"] == r.msg_id == msg_id_for(name, r.json["data"]["uidl"])
    assert receiver.invalid == 0

    rc, summary = once(cfg)
    assert rc == 0 and summary["accounts"][name]["new"] == 0
    assert len(receiver.verified) == 12

    dovecot.deliver_many(dovecot_user, generate_messages(3, seed=82))
    rc, _ = once(cfg)
    assert rc == 0
    assert len(receiver.delivered_ids) == 15 and len(receiver.verified) == 15


def test_failing_then_down_receiver_loses_nothing_and_deletes_nothing_early(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: DovecotUser, receiver: Receiver
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(5, seed=83))
    cfg, _ = setup(tmp_path, dovecot, dovecot_user, receiver, on_delivered="delete")

    receiver.fail_next(3)  # the first three attempts get a 500
    once(cfg)  # may or may not drain, depending on how soon the policy retries
    # Only messages the receiver acknowledged may have left the server.
    assert dovecot.message_count(dovecot_user) >= 5 - len(receiver.delivered_ids)
    once_until_ok(cfg)
    assert len(receiver.delivered_ids) == 5
    once(cfg)  # the session after delivery DELEs what was delivered
    assert dovecot.message_count(dovecot_user) == 0

    # Receiver down: new mail stays queued (and on the server) across process restarts.
    receiver.stop()
    dovecot.deliver_many(dovecot_user, generate_messages(4, seed=84))
    for _ in range(2):
        rc, summary = once(cfg)
        assert rc == 1 and summary["pending"] == 4
        assert dovecot.message_count(dovecot_user) == 4  # nothing deleted before its 2xx
    receiver.start()
    once_until_ok(cfg)
    once(cfg)
    assert len(receiver.delivered_ids) == 9
    assert dovecot.message_count(dovecot_user) == 0
    assert receiver.invalid == 0


def test_hostile_corpus_reaches_the_receiver_schema_valid(
    tmp_path: Path,
    dovecot: DovecotServer,
    dovecot_user: DovecotUser,
    receiver: Receiver,
) -> None:
    """Every corpus message arrives schema-valid, with and without parse worker processes, and
    the two give the same bodies. Both runs are in this one test (each with its own state, on
    the same mailbox), so the comparison always happens, whatever `-k` selects."""
    corpus = sorted((Path(__file__).parent.parent / "corpus" / "eml").glob("*.eml"))
    assert len(corpus) >= 20
    dovecot.deliver_many(dovecot_user, [p.read_bytes() for p in corpus])
    bodies: dict[int, list[str]] = {}
    for parse_workers in (0, 1):
        run = tmp_path / f"parse_workers_{parse_workers}"
        run.mkdir()
        mark = f"{os.getpid()}-{uuid.uuid4().hex}"
        already = len(receiver.delivered)
        cfg, _ = setup(
            run, dovecot, dovecot_user, receiver, poller={"parse_workers": parse_workers}
        )
        env = {**os.environ, _RUN_MARK: mark}
        rc, summary, log = once_logged(cfg, timeout=120, env=env)
        assert rc == 0, summary
        assert ("parsed in 1 worker process" in log) == (parse_workers == 1), log[-2000:]
        got = receiver.delivered[already:]
        assert len({r.msg_id for r in got}) == len(corpus)
        for r in got:
            jsonschema.validate(r.json, mail.schema())
        # Compared without what differs between the runs' deliveries of one mailbox: nothing
        # but the ids (account and UIDL are the same here; kept out as before).
        mine = ("account", "id", "uidl")
        bodies[parse_workers] = sorted(
            json.dumps({k: v for k, v in r.json["data"].items() if k not in mine}, sort_keys=True)
            for r in got
        )
        # No parse worker outlives `once`.
        alive = functools.partial(_descendants_of_run, mark)
        wait_until_sync(lambda: not alive(), 10, what="no parse worker of the run left")  # noqa: B023
    assert bodies[0] == bodies[1]

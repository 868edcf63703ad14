"""Custody through the real CLI against Dovecot: `trace` (by id, by account+UIDL, by
Message-ID; text and JSON), `GET /v1/messages/{id}`, `reconcile` (read-only; gaps exit 1) and
`replay` (original webhook-ids; fetched from the server again when the store lost the row)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.delivery.ids import msg_id_for
from bridge.testing.samples import generate_messages
from tests.e2e.harness import Receiver, dovecot_account, write_config
from tests.e2e.test_commands import cli
from tests.e2e.test_guarantees import once
from tests.e2e.test_ops import Bridge, fetch, run_config
from tests.support.dovecot import DovecotServer, DovecotUser

pytestmark = pytest.mark.dovecot


def _uidls(dovecot: DovecotServer, user: DovecotUser, acct: dict[str, object]) -> list[str]:
    """The server's UIDLs, read the way reconcile reads them (a throwaway poplib session)."""
    import poplib
    import ssl

    ctx = ssl.create_default_context(cafile=str(dovecot.ca_file))
    box = poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, context=ctx, timeout=10)
    try:
        box.user(user.name)
        box.pass_(user.password)
        return [line.split()[1].decode() for line in box.uidl()[1]]
    finally:
        box.close()  # no QUIT


def test_trace_shows_fetch_attempts_dele_and_quit(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: DovecotUser, receiver: Receiver
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=1611))
    acct = dovecot_account(dovecot, dovecot_user, on_delivered="delete")
    uidls = _uidls(dovecot, dovecot_user, acct)
    cfg = write_config(
        tmp_path / "c.yaml",
        db=tmp_path / "s.db",
        receiver=receiver,
        accounts=[acct],
        webhook={"retry_max_delay": 0.2},
    )
    receiver.fail_next(1, status=503)  # the first attempt is refused
    rc, _ = once(cfg)
    rc, summary = once(cfg)  # the retry, then the DELE in the next session
    rc, summary = once(cfg)
    assert rc == 0, summary
    assert dovecot.message_count(dovecot_user) == 0
    name = str(acct["name"])
    ids = [msg_id_for(name, u) for u in uidls]
    docs = []
    for msg_id in ids:
        out = cli("trace", msg_id, "--json", "--config", str(cfg))
        assert out.returncode == 0, out.stderr
        docs.append(json.loads(out.stdout))
    events = [[e["event"] for e in d["events"]] for d in docs]
    assert all(ev[0] == "fetched" and ev[-2:] == ["dele_sent", "deleted"] for ev in events)
    assert sorted(ev.count("retry") for ev in events) == [0, 1]
    refused = next(d for d in docs if "retry" in [e["event"] for e in d["events"]])
    retry = next(e for e in refused["events"] if e["event"] == "retry")
    assert retry["status"] == 503 and retry["detail"]["duration_ms"] > 0  # timed
    for d in docs:
        assert d["delivered"] and d["removed_from_server"] and d["delivered_before_removal"]
        dele, deleted = d["events"][-2], d["events"][-1]
        assert dele["session"] == deleted["session"]
        assert d["message_id"] and d["message_id"].startswith("<")
    # The refused message's DELE came after its 2xx, not after the refusal.
    delivered = next(e for e in refused["events"] if e["event"] == "delivered")
    assert refused["events"].index(delivered) < len(refused["events"]) - 2
    # The other ways in, and the text form.
    by_uidl = cli("trace", "--account", name, "--uidl", uidls[0], "--config", str(cfg), "--json")
    assert json.loads(by_uidl.stdout)["msg_id"] == ids[0]
    by_mid = cli("trace", "--message-id", docs[1]["message_id"], "--config", str(cfg))
    assert by_mid.returncode == 0 and ids[1] in by_mid.stdout
    assert "QUIT +OK" in by_mid.stdout and "verdict: delivered, then removed" in by_mid.stdout
    unknown = cli("trace", "msg_" + "0" * 32, "--config", str(cfg))
    assert unknown.returncode == 1 and "no custody trail" in unknown.stderr
    assert cli("trace", "--uidl", "x", "--config", str(cfg)).returncode == 2


def test_messages_endpoint_serves_the_trail(
    tmp_path: Path,
    dovecot: DovecotServer,
    dovecot_user: DovecotUser,
    receiver: Receiver,
    bridges: list[Bridge],
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(1, seed=1612))
    acct = dovecot_account(dovecot, dovecot_user)
    [uidl] = _uidls(dovecot, dovecot_user, acct)
    cfg = tmp_path / "c.yaml"
    port = run_config(cfg, f"sqlite:///{tmp_path / 's.db'}", receiver, [acct])
    bridge = Bridge(cfg, port)
    bridges.append(bridge)
    bridge.wait("a delivery", lambda: len(receiver.delivered) == 1)
    msg_id = msg_id_for(str(acct["name"]), uidl)
    code, body = fetch(f"{bridge.base}/v1/messages/{msg_id}")
    assert code == 200, body
    doc = json.loads(body)
    assert [e["event"] for e in doc["events"]] == ["fetched", "delivered"]
    assert doc["events"][1]["status"] == 204
    assert receiver.secret not in body and dovecot_user.password not in body
    assert "Subject" not in body  # no message content
    assert fetch(f"{bridge.base}/v1/messages/msg_unknown")[0] == 404
    assert bridge.stop() == 0


def test_reconcile_finds_gaps_without_touching_the_mailbox(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: DovecotUser, receiver: Receiver
) -> None:
    first = dovecot.deliver_many(dovecot_user, generate_messages(3, seed=1613))
    acct = dovecot_account(dovecot, dovecot_user, on_delivered="keep")
    cfg = write_config(
        tmp_path / "c.yaml", db=tmp_path / "s.db", receiver=receiver, accounts=[acct]
    )
    name = str(acct["name"])
    assert once(cfg)[0] == 0
    # Two new messages (not polled yet) and one delivered message removed behind our back.
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=1614))
    stem = first[0].name
    [moved] = [p for p in dovecot_user.maildir.glob("*/*") if p.name.startswith(stem)]
    moved.unlink()  # Dovecot moved it from new/ to cur/ when it was read
    before = dovecot.message_count(dovecot_user)
    out = cli("reconcile", "--account", name, "--json", "--config", str(cfg))
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert doc["on_server"] == 4 and len(doc["gap"]) == 2
    assert len(doc["delivered_on_server"]) == 2 and len(doc["delivered_gone"]) == 1
    assert doc["pending"] == doc["dead"] == []
    assert dovecot.message_count(dovecot_user) == before  # nothing deleted, nothing changed
    text = cli("reconcile", "--account", name, "--config", str(cfg))
    assert text.returncode == 1 and "gap" in text.stdout
    assert once(cfg)[0] == 0
    ok = cli("reconcile", "--account", name, "--json", "--config", str(cfg))
    assert ok.returncode == 0 and json.loads(ok.stdout)["gap"] == []
    bad = cli("reconcile", "--account", "nope", "--config", str(cfg))
    assert bad.returncode == 1 and "no account named" in bad.stderr


def test_replay_resends_with_the_original_ids_and_refetches_lost_rows(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: DovecotUser, receiver: Receiver
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(3, seed=1615))
    acct = dovecot_account(dovecot, dovecot_user, on_delivered="keep")
    name = str(acct["name"])
    cfg = write_config(
        tmp_path / "c.yaml", db=tmp_path / "s.db", receiver=receiver, accounts=[acct]
    )
    assert once(cfg)[0] == 0
    first_ids = [r.msg_id for r in receiver.delivered]
    assert len(first_ids) == 3
    uidls = _uidls(dovecot, dovecot_user, acct)

    one = cli("replay", "--account", name, "--uidl", uidls[0], "--json", "--config", str(cfg))
    assert one.returncode == 0, one.stderr
    counts = json.loads(one.stdout)
    assert (counts["requeued"], counts["delivered"], counts["not_found"]) == (1, 1, 0)
    assert receiver.delivered[-1].msg_id == msg_id_for(name, uidls[0]) in first_ids

    every = cli("replay", "--account", name, "--since", "2000-01-01", "--config", str(cfg))
    assert every.returncode == 0 and "3 requeued" in every.stdout
    assert [r.msg_id for r in receiver.delivered[-3:]] == first_ids

    missing = cli("replay", "--account", name, "--uidl", "no-such-uidl", "--config", str(cfg))
    assert missing.returncode == 1 and "1 not found" in missing.stdout

    # The store is lost (a new state file): the messages are fetched from the server again
    # and keep their webhook-ids.
    lost = write_config(
        tmp_path / "lost.yaml", db=tmp_path / "new.db", receiver=receiver, accounts=[acct]
    )
    again = cli("replay", "--account", name, "--uidl", *uidls, "--json", "--config", str(lost))
    assert again.returncode == 0, again.stderr
    counts = json.loads(again.stdout)
    assert (counts["fetched_again"], counts["delivered"], counts["not_found"]) == (3, 3, 0)
    assert sorted(r.msg_id for r in receiver.delivered[-3:]) == sorted(first_ids)
    assert dovecot.message_count(dovecot_user) == 3
    trail = cli("trace", first_ids[0], "--json", "--config", str(lost))
    assert json.loads(trail.stdout)["events"][0]["session"].startswith("replay-")

"""Three `pop3bridge run` replicas share 60 Dovecot mailboxes through one PostgreSQL schema.

Real parts only: a private Dovecot that locks a maildrop per POP3 session (a second session
waits, then gets `-ERR [IN-USE]`), PostgreSQL on 127.0.0.1:5432 in a schema of its own, and a
receiver that verifies every signature with the `standardwebhooks` library. Mail keeps arriving
while the replicas run; four accounts are added with `pop3bridge accounts add` mid-run; one
replica is SIGKILLed. Checked: every message arrives; no two replicas ever had one mailbox open
at once (their session start/end log lines, to the millisecond, and no `[IN-USE]`); the lease
table, sampled all along, never shows two live holders for an account; the dead replica's
accounts are taken over within TTL + one heartbeat; duplicates are few, from the crash window,
and carry the same webhook-id and body; the spread stays within ceil(M/N) + slack.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import yaml

from bridge.poller.sharing import capacity
from bridge.testing.samples import generate_messages
from tests.e2e.harness import Receiver
from tests.support import require_service
from tests.support.certs import TestCerts
from tests.support.dovecot import DovecotServer, DovecotUser, dovecot_available
from tests.support.pgschema import drop_schema, schema_url
from tests.support.wait import wait_until_sync

pytestmark = pytest.mark.dovecot

ACCOUNTS = 60
FROM_DB = 4  # of the 60, added with `accounts add` while the replicas run
REPLICAS = 3
TTL = 5.0
HEARTBEAT = TTL / 3


@pytest.fixture
def locking_dovecot(tls_certs: TestCerts) -> Iterator[DovecotServer]:
    ok, why = dovecot_available()
    require_service("dovecot", ok, why)
    server = DovecotServer(tls_certs, lock_sessions=True)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(postgres_dsn: str) -> Iterator[str]:
    url = schema_url(postgres_dsn, "t_replicas")
    yield url
    asyncio.run(drop_schema(url))


def account(dovecot: DovecotServer, user: DovecotUser) -> dict[str, Any]:
    return {
        "name": f"acct-{user.name}",
        "host": dovecot.host,
        "port": dovecot.pop3_port,
        "tls": "none",
        "allow_plaintext": True,
        "username": user.name,
        "password": user.password,
        "webhook": "main",
        "poll_interval": 1.5,
        "on_delivered": "delete",
    }


class LeaseSampler(threading.Thread):
    """Reads the lease table every 50 ms from its own connection, as an operator would."""

    def __init__(self, dsn: str, schema: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.schema = dsn, schema
        self.samples: list[tuple[float, dict[str, list[str]]]] = []
        self.errors: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.dsn, server_settings={"search_path": self.schema})
        try:
            while not self.done.is_set():
                now = time.time()
                try:
                    rows = await conn.fetch(
                        "SELECT account, holder FROM leases WHERE expires_at > $1", now
                    )
                except asyncpg.UndefinedTableError:
                    rows = []  # not migrated yet
                except Exception as exc:
                    self.errors.append(repr(exc))
                    rows = []
                live: dict[str, list[str]] = defaultdict(list)
                for r in rows:
                    live[r["account"]].append(r["holder"])
                self.samples.append((now, dict(live)))
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    def latest(self) -> dict[str, list[str]]:
        return self.samples[-1][1] if self.samples else {}

    def wait_for(self, what: Any, timeout: float) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.samples and what(self.latest()):
                return self.samples[-1][0]
            time.sleep(0.05)
        raise AssertionError(f"lease table never reached the expected state: {self.latest()}")


def per_holder(live: dict[str, list[str]]) -> Counter[str]:
    return Counter(h for holders in live.values() for h in holders)


def sessions(log: Path) -> list[tuple[str, str, float]]:
    """(account, 'start'|'end', unix time) from a replica's JSON log."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if rec.get("message") in ("session start", "session end"):
            moment = dt.datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00"))
            out.append((rec["account"], rec["message"].split()[1], moment.timestamp()))
    return out


def overlaps(logs: dict[str, Path], killed: dict[str, float]) -> list[str]:
    """Pairs of sessions on one account by two replicas that were open at the same time.

    A session of a killed replica without an end line was open until the kill (the kernel
    closes its socket then, and Dovecot ends the session)."""
    intervals: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for name, log in logs.items():
        open_at: dict[str, float] = {}
        for acct, kind, t in sessions(log):
            if kind == "start":
                open_at[acct] = t
            elif acct in open_at:
                intervals[acct].append((open_at.pop(acct), t, name))
        for acct, t in open_at.items():
            intervals[acct].append((t, killed.get(name, float("inf")), name))
    bad = []
    for acct, spans in intervals.items():
        spans.sort()
        for (s1, e1, r1), (s2, e2, r2) in itertools.pairwise(spans):
            if r1 != r2 and s2 < e1:
                bad.append(f"{acct}: {r1} [{s1:.3f}, {e1:.3f}] vs {r2} [{s2:.3f}, {e2:.3f}]")
    return bad


def test_three_replicas_share_sixty_mailboxes_and_survive_a_sigkill(
    tmp_path: Path,
    locking_dovecot: DovecotServer,
    postgres_dsn: str,
    pg_url: str,
) -> None:
    dovecot = locking_dovecot
    receiver = Receiver()
    receiver.start()
    users = dovecot.add_users(ACCOUNTS, prefix="rep")
    accounts = [account(dovecot, u) for u in users]
    in_file, in_db = accounts[:-FROM_DB], accounts[-FROM_DB:]
    config = {
        "state": {"url": pg_url},
        "webhooks": [
            {"name": "main", "url": receiver.url, "secret": receiver.secret, "timeout": 1}
        ],
        "accounts": in_file,
        "poller": {
            "jitter": 0.2,
            "shutdown_grace": 3,
            "lease_ttl": TTL,
            "accounts_from_db": True,
            "accounts_refresh": 1,
            "max_concurrent_accounts": 8,
        },
        "ops": {"enabled": False},
        "logging": {"format": "json", "level": "DEBUG"},
    }
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))

    # Mail: two per mailbox to start with, then a steady trickle during the whole run.
    sent: dict[str, str] = {}  # Message-ID -> account
    seq = iter(range(10**6))

    def deliver(user: DovecotUser) -> None:
        raw = generate_messages(1, seed=next(seq), size=800)[0]
        mid = next(
            line.split(b":", 1)[1].strip().decode()
            for line in raw.split(b"\r\n\r\n", 1)[0].splitlines()
            if line.lower().startswith(b"message-id:")
        )
        sent[mid] = f"acct-{user.name}"
        dovecot.deliver(user, raw)

    for u in users:
        deliver(u)
        deliver(u)
    trickle_stop = threading.Event()

    def trickle() -> None:
        rng = random.Random(7)
        while not trickle_stop.wait(0.08):
            deliver(rng.choice(users))

    def more_mail(count: int) -> None:
        """Wait until the trickle has delivered `count` more messages to Dovecot."""
        mark = len(sent)
        wait_until_sync(lambda: len(sent) >= mark + count, 60, what=f"{count} more messages")

    schema = pg_url.rsplit("=", 1)[1]
    sampler = LeaseSampler(postgres_dsn, schema)
    logs = {f"replica-{i}": tmp_path / f"replica-{i}.log" for i in range(REPLICAS)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    feeder = threading.Thread(target=trickle, daemon=True)
    try:
        for name, log in logs.items():
            env = {**os.environ, "POP3BRIDGE_POLLER__REPLICA_ID": name}
            with open(log, "ab") as fh:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "bridge", "run", "--config", str(cfg)],
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
        sampler.start()
        feeder.start()

        # 1. The file's 56 accounts are spread over the three replicas.
        file_cap = capacity(len(in_file), REPLICAS)
        sampler.wait_for(
            lambda live: (
                len(live) == len(in_file)
                and len(per_holder(live)) == REPLICAS
                and max(per_holder(live).values()) <= file_cap
            ),
            timeout=20,
        )

        # 2. Four more arrive through the admin CLI and are picked up without a restart.
        for acct in in_db:
            pw = tmp_path / f"{acct['name']}.pw"
            pw.write_text(acct["password"])
            added = subprocess.run(
                [sys.executable, "-m", "bridge", "accounts", "--config", str(cfg), "add",
                 acct["name"], "--url", f"pop3://{acct['username']}@{dovecot.host}:"
                 f"{dovecot.pop3_port}", "--webhook", "main", "--password-file", str(pw),
                 "--set", "tls=none", "--set", "allow_plaintext=true",
                 "--set", "poll_interval=1.5", "--set", "on_delivered=delete"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert added.returncode == 0, added.stderr
        full_cap = capacity(ACCOUNTS, REPLICAS)
        sampler.wait_for(
            lambda live: len(live) == ACCOUNTS and max(per_holder(live).values()) <= full_cap,
            timeout=15,
        )
        more_mail(12)  # about a second's worth of the trickle, however loaded the machine

        # 3. SIGKILL one replica while mail is flowing.
        victim = "replica-0"
        orphans = {a for a, h in sampler.latest().items() if victim in h}
        assert orphans, "the victim held nothing; the spread check above should have failed"
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)
        killed_at = time.time()
        taken_at = sampler.wait_for(
            lambda live: all(a in live and victim not in live[a] for a in orphans),
            timeout=TTL + 4 * HEARTBEAT + 5,
        )
        takeover = taken_at - killed_at
        more_mail(12)  # mail for the survivors after the takeover too
        trickle_stop.set()
        feeder.join(5)

        # 4. Everything sent is delivered, and every mailbox ends up empty (delete mode).
        survivors_cap = capacity(ACCOUNTS, REPLICAS - 1)
        deadline = time.time() + 40
        while time.time() < deadline:
            got = {r.json["data"]["message_id"] for r in receiver.delivered}
            if set(sent) <= got and all(dovecot.message_count(u) == 0 for u in users):
                break
            time.sleep(0.25)
        final = sampler.latest()
    finally:
        trickle_stop.set()
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        exits = {n: p.wait(20) for n, p in procs.items()}
        sampler.done.set()
        sampler.join(10)
        receiver.close()

    delivered = receiver.delivered
    got = {r.json["data"]["message_id"]: r.json["data"]["account"] for r in delivered}
    missing = set(sent) - set(got)
    assert not missing, f"{len(missing)} of {len(sent)} messages never delivered"
    assert all(got[m] == a for m, a in sent.items())
    assert receiver.invalid == 0
    assert all(dovecot.message_count(u) == 0 for u in users), "delivered mail left on the server"
    # Duplicates: only the messages the victim had in flight, same webhook-id, same body.
    ids = Counter(r.msg_id for r in delivered)
    dups = {i: n for i, n in ids.items() if n > 1}
    assert len(dups) <= 2 * 16, f"too many duplicates for one crash window: {len(dups)}"
    for msg_id in dups:
        bodies = {orjson.dumps(r.json) for r in delivered if r.msg_id == msg_id}
        assert len(bodies) == 1, f"duplicate {msg_id} with a different body"
    # Survivors shut down cleanly; the victim was killed.
    assert exits["replica-0"] == -signal.SIGKILL
    assert exits["replica-1"] == 0 and exits["replica-2"] == 0

    # Leases: never two live holders of one account, sampled many times while running.
    assert sampler.errors == []
    assert len(sampler.samples) >= 100
    assert max((len(h) for _, live in sampler.samples for h in live.values()), default=0) == 1
    assert takeover <= TTL + HEARTBEAT + 1.5, f"takeover took {takeover:.1f}s"
    assert max(per_holder(final).values()) <= survivors_cap
    assert set(per_holder(final)) == {"replica-1", "replica-2"}

    # No contention: no two replicas had a mailbox open at once, and Dovecot never refused one.
    assert overlaps(logs, {victim: killed_at}) == []
    for name, log in logs.items():
        text = log.read_text(errors="replace")
        assert "IN-USE" not in text, f"{name} met a locked mailbox"
        assert '"session start"' in text
    assert "Couldn't lock POP3 session" not in dovecot.log_text()
    print(
        f"\nreplicas: {len(sent)} messages, {len(dups)} duplicates, takeover {takeover:.2f}s, "
        f"{len(sampler.samples)} lease samples, final spread {dict(per_holder(final))}"
    )

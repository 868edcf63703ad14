"""Poller soak: mail keeps arriving while everything around the bridge breaks, then the books
must balance.

One command, bounded, loopback only::

    python -m tests.soak.run --minutes 3 [--seed N] [--keep]

`tests/soak/test_soak.py` runs the same thing for about a minute in the normal suite.

What runs
---------
A private Dovecot (or the test session's), a signature-verifying webhook receiver
(`tests.support.receiver`), a `FaultRelay` in front of Dovecot's plaintext port, and
``pop3bridge run`` as a subprocess with four accounts: two straight to Dovecot over implicit
TLS and two through the relay; half of them ``on_delivered: delete``. A feeder drops a message
into a random mailbox every ~150 ms, each with a unique Message-ID that the payload carries.

What breaks (seeded, printed)
-----------------------------
- the bridge is SIGKILLed at random moments (at least 20 times) and restarted at once;
- the receiver answers 500, 429 with Retry-After, stalls past the sender's timeout, resets the
  TCP connection, or is down for a few seconds;
- the relay cuts a session mid-RETR or mid-UIDL, stalls past the read timeout, or answers the
  login with ``-ERR [IN-USE]`` / ``-ERR [SYS/TEMP]``; Dovecot itself is stopped and started;
- the SQLite store lives on a size-limited tmpfs that is filled to the last byte and freed
  (needs root for the mount; without it that fault is reported as not injected).

What is checked
---------------
A watcher compares, every few milliseconds, the maildirs of the delete accounts with what the
receiver acknowledged: a message gone from the maildir before its 2xx is "deleted before
delivery". After the chaos the bridge runs undisturbed until every message arrived (or a
deadline), and the report counts sent, delivered (unique), duplicates (and whether every
duplicate carried the same webhook-id), lost, dead-lettered and the bridge's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import yaml

from bridge.store import open_store
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.faultrelay import FaultRelay, RelayFault
from tests.support.loop import LoopThread
from tests.support.receiver import Reply, ThreadedReceiver

ROOT = Path(__file__).resolve().parents[2]
MIN_KILLS = 20
MIN_RELAY_FAULTS = 3  # relay faults that must have hit a session by the end of a run
FEED_INTERVAL = 0.15
READ_TIMEOUT = 2.0
WEBHOOK_TIMEOUT = 2.0
# Room for a few thousand messages (raw + payload); the disk-full fault fills the rest.
TMPFS_SIZE = "256m"


# -- small plumbing ---------------------------------------------------------------------------
@dataclass
class Mailbox:
    account: str
    user: DovecotUser
    delete: bool
    via_relay: bool


@dataclass
class Sent:
    soak_id: str
    box: Mailbox
    file: str  # maildir base name (what Dovecot keeps as the prefix in cur/)


@dataclass
class Report:
    seed: int
    seconds: float = 0.0
    sent: int = 0
    delivered_unique: int = 0
    deliveries: int = 0
    duplicates: int = 0
    duplicate_ids_consistent: bool = True
    lost: int = 0
    deleted_before_delivery: int = 0
    dead_lettered: int = 0
    invalid_signatures: int = 0
    kills: int = 0
    unexpected_exits: list[int] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    relay_fired: Counter[str] = field(default_factory=Counter)
    left_on_server_delete_mode: int = 0
    asyncio_errors: int = 0  # errors asyncio itself logged: unhandled task exceptions etc.
    clean_exit: bool = False
    # From the custody trails alone (state-after.db): messages whose DELE or removal is
    # recorded before their first 2xx, and messages that left a delete-mode mailbox without a
    # trail proving a delivery first.
    trail_dele_before_2xx: int = 0
    trail_removed_unproven: int = 0
    trails_checked: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.deleted_before_delivery == 0
            and self.duplicate_ids_consistent
            and self.invalid_signatures == 0
            and self.kills >= MIN_KILLS
            and self.sent > 0
            and self.asyncio_errors == 0
            and self.trail_dele_before_2xx == 0
            and self.trail_removed_unproven == 0
            and self.trails_checked > 0
        )

    def render(self) -> str:
        lines = [
            f"soak: seed={self.seed} ran {self.seconds:.0f}s, {self.kills} SIGKILLs",
            f"  sent in:                  {self.sent}",
            f"  delivered (unique):       {self.delivered_unique}",
            f"  webhook 2xx answers:      {self.deliveries}",
            f"  duplicates:               {self.duplicates}"
            f" (same webhook-id each: {'yes' if self.duplicate_ids_consistent else 'NO'})",
            f"  lost:                     {self.lost}",
            f"  deleted before delivery:  {self.deleted_before_delivery}",
            f"  dead-lettered:            {self.dead_lettered}",
            f"  invalid signatures:       {self.invalid_signatures}",
            f"  bridge peak RSS:          {self.peak_rss_mb:.1f} MiB",
            f"  bridge exits not by us:   {self.unexpected_exits or 'none'}",
            f"  left on server (delete):  {self.left_on_server_delete_mode}",
            f"  final SIGTERM exit 0:     {'yes' if self.clean_exit else 'NO'}",
            f"  asyncio errors in log:    {self.asyncio_errors}",
            f"  custody trails checked:   {self.trails_checked}: DELE before 2xx "
            f"{self.trail_dele_before_2xx}, removed without a proven delivery "
            f"{self.trail_removed_unproven}",
            "  faults injected:          "
            + ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())),
            "  relay faults that fired:  "
            + (", ".join(f"{k}={v}" for k, v in sorted(self.relay_fired.items())) or "none"),
        ]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"  RESULT: {'OK' if self.ok else 'FAILED'}")
        return "\n".join(lines)


def early_deletions(
    sent: list[Sent], present: dict[str, set[str]], delivered: dict[str, set[str]]
) -> list[str]:
    """Soak ids gone from their maildir although the receiver has not acknowledged them.

    Sound only if `sent` was read before `present`, and `present` before `delivered`: a file
    missing at listing time was deleted earlier, so its 2xx, if it came first, is already in
    `delivered`.
    """
    return [
        s.soak_id
        for s in sent
        if s.box.delete and s.file not in present[s.box.account] and s.soak_id not in delivered
    ]


# -- the disk ---------------------------------------------------------------------------------
@contextlib.contextmanager
def small_disk(base: Path) -> Iterator[tuple[Path, bool]]:
    """A size-limited tmpfs (root only); falls back to a plain directory, flagged False."""
    mnt = base / "state"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    try:
        yield mnt, done.returncode == 0
    finally:
        if done.returncode == 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def fill_disk(directory: Path) -> Path:
    """Write a filler file until the filesystem says ENOSPC."""
    filler = directory / "filler"
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(block)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        with contextlib.suppress(OSError):
            while True:  # the last partial block
                fh.write(b"\0" * 512)
    return filler


# -- the soak ---------------------------------------------------------------------------------
class Soak:
    def __init__(self, dovecot: DovecotServer, workdir: Path, *, seconds: float, seed: int) -> None:
        self.dovecot = dovecot
        self.workdir = workdir
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.report = Report(seed=seed)
        self.sent: list[Sent] = []
        self._sent_lock = threading.Lock()
        self._stop = threading.Event()
        self._counter = 0
        self._main_jobs: queue.Queue[Callable[[], None]] = queue.Queue()
        self.bridge: subprocess.Popen[bytes] | None = None
        self._bridge_lock = threading.Lock()
        self.log = workdir / "bridge.log"
        self.violations: list[str] = []
        self.disk_dir: Path | None = None
        self.disk_limited = False

    # -- pieces ---------------------------------------------------------------------------
    def _config(self, db: Path, relay_port: int) -> Path:
        accounts = []
        for box in self.boxes:
            base: dict[str, Any] = {
                "name": box.account,
                "host": self.dovecot.host,
                "username": box.user.name,
                "password": box.user.password,
                "webhook": "main",
                "poll_interval": 0.5,
                "on_delivered": "delete" if box.delete else "keep",
                "read_timeout": READ_TIMEOUT,
                "connect_timeout": 3,
            }
            if box.via_relay:
                base.update(port=relay_port, tls="none", allow_plaintext=True, auth="user")
            else:
                base.update(
                    port=self.dovecot.pop3s_port, tls="implicit", ca_file=str(self.dovecot.ca_file)
                )
            accounts.append(base)
        config = {
            "state": {"url": f"sqlite:///{db}"},
            "webhooks": [
                {
                    "name": "main",
                    "url": self.receiver.url,
                    "secret": self.receiver.secret,
                    "timeout": WEBHOOK_TIMEOUT,
                    "max_attempts": 1000,
                    "retry_max_delay": 2,
                }
            ],
            "accounts": accounts,
            "poller": {"jitter": 0.2, "shutdown_grace": 5},
            "ops": {"enabled": False},
            "logging": {"format": "json", "level": "INFO"},
        }
        path = self.workdir / "soak.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _message(self, soak_id: str) -> bytes:
        size = self.rng.choice([200, 2_000, 2_000, 20_000, 100_000])
        line = b"soak filler line, long enough to matter .................................\r\n"
        body = line * max(1, size // len(line))
        head = (
            f"From: Soak <soak@example.com>\r\nTo: box@example.com\r\n"
            f"Subject: soak {soak_id}\r\nMessage-ID: <{soak_id}@soak.test>\r\n"
            f"Date: Sun, 29 Nov 2026 04:00:00 +0000\r\n\r\n"
        ).encode()
        return head + body

    def _feed(self) -> None:
        while not self._stop.wait(self.rng.uniform(0.5, 1.5) * FEED_INTERVAL):
            self.feed_one()

    def feed_one(self) -> None:
        box = self.rng.choice(self.boxes)
        self._counter += 1
        soak_id = f"soak-{self.report.seed}-{self._counter:06d}"
        path = self.dovecot.deliver(box.user, self._message(soak_id))
        with self._sent_lock:
            self.sent.append(Sent(soak_id, box, path.name.split(":", 1)[0]))

    def delivered_ids(self) -> dict[str, set[str]]:
        """soak id -> webhook-ids it arrived under (2xx answers only)."""
        out: dict[str, set[str]] = defaultdict(set)
        for r in list(self.receiver.delivered):
            mid = (r.json or {}).get("data", {}).get("message_id") or ""
            out[mid.strip("<>").split("@", 1)[0]].add(r.msg_id or "")
        return out

    def _present(self, user: DovecotUser) -> set[str]:
        # new/ before cur/: a file renamed between the two listings is still seen once.
        names: set[str] = set()
        for sub in ("new", "cur"):
            with contextlib.suppress(FileNotFoundError):
                names.update(n.split(":", 1)[0] for n in os.listdir(user.maildir / sub))
        return names

    def _watch(self) -> None:
        """Deleted-before-delivery: the maildir first, then the receiver (both monotone)."""
        flagged: set[str] = set()
        while not self._stop.is_set() or not self._watch_done.is_set():
            with self._sent_lock:
                sent = [s for s in self.sent if s.box.delete]
            present = {box.account: self._present(box.user) for box in self.boxes if box.delete}
            delivered = self.delivered_ids()
            for soak_id in early_deletions(sent, present, delivered):
                if soak_id not in flagged:
                    flagged.add(soak_id)
                    self.violations.append(soak_id)
            time.sleep(0.02)

    def _sample(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(psutil.Error):
            rss = psutil.Process(proc.pid).memory_info().rss / 2**20
            self.report.peak_rss_mb = max(self.report.peak_rss_mb, rss)

    def start_bridge(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as fh, self._bridge_lock:
            self.bridge = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run", "--config", str(self.cfg)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
            return self.bridge

    def _reap_unexpected(self, proc: subprocess.Popen[bytes]) -> None:
        code = proc.poll()
        if code is not None and code != -signal.SIGKILL:
            self.report.unexpected_exits.append(code)

    # -- faults -------------------------------------------------------------------------
    def _fault(self, kind: str) -> None:
        rx, rng = self.receiver, self.rng
        self.report.faults[kind] += 1
        if kind == "webhook 500":
            rx.script(*[Reply(500)] * rng.randint(1, 5))
        elif kind == "webhook 429":
            rx.script(*[Reply(429, retry_after="1")] * rng.randint(1, 3))
        elif kind == "webhook timeout":
            rx.script(Reply(delay=WEBHOOK_TIMEOUT + 1))
        elif kind == "webhook reset":
            rx.script(*[Reply(reset=True)] * rng.randint(1, 3))
        elif kind == "webhook down":
            rx.stop()
            self._stop.wait(rng.uniform(2, 5))
            rx.start()
        elif kind == "pop3 cut RETR":
            self._relay(RelayFault("cut", "RETR", after_bytes=rng.randint(0, 30_000)))
        elif kind == "pop3 cut UIDL":
            self._relay(RelayFault("cut", "UIDL", after_bytes=rng.randint(0, 60)))
        elif kind == "pop3 stall":
            verb = rng.choice(["RETR", "UIDL", "STAT", "LIST"])
            self._relay(RelayFault("stall", verb, seconds=READ_TIMEOUT + 1.5))
        elif kind == "pop3 IN-USE":
            self._relay(RelayFault("login_error"))
        elif kind == "pop3 SYS/TEMP":
            self._relay(RelayFault("login_error", status="-ERR [SYS/TEMP] try again later"))
        elif kind == "dovecot restart":
            # Dovecot is started with PR_SET_PDEATHSIG, which fires when the *thread* that
            # started it ends: restart it from the main thread, which outlives the run.
            pause = rng.uniform(1, 3)
            self._main_jobs.put(lambda: self._restart_dovecot(pause))
        elif kind == "disk full":
            if self.disk_limited and self.disk_dir is not None:
                filler = fill_disk(self.disk_dir)
                self._stop.wait(rng.uniform(3, 6))
                filler.unlink()
            else:
                self.report.faults[kind] -= 1
                self.report.faults["disk full (not injected: no tmpfs)"] += 1

    def _restart_dovecot(self, pause: float) -> None:
        self.dovecot.stop()
        time.sleep(pause)  # the stimulus: Dovecot down for a while
        self.dovecot.start()

    def _run_main_jobs(self) -> None:
        while True:
            try:
                job = self._main_jobs.get_nowait()
            except queue.Empty:
                return
            job()

    def _relay(self, fault: RelayFault) -> None:
        relay = self.relay

        def add() -> None:
            relay.queue(*[fault] * self.rng.randint(1, 2))

        self.loop.run(add)

    KINDS = (
        "webhook 500",
        "webhook 429",
        "webhook timeout",
        "webhook reset",
        "webhook down",
        "pop3 cut RETR",
        "pop3 cut UIDL",
        "pop3 stall",
        "pop3 IN-USE",
        "pop3 SYS/TEMP",
        "dovecot restart",
        "disk full",
    )

    def _inject(self) -> None:
        # Every kind once in a shuffled round, then another round, until the chaos ends.
        while not self._stop.is_set():
            kinds = list(self.KINDS)
            self.rng.shuffle(kinds)
            for kind in kinds:
                if self._stop.wait(self.rng.uniform(0.5, 2.0)):
                    return
                self._fault(kind)

    def _kill_loop(self, until: float) -> None:
        n = max(MIN_KILLS, int(self.seconds / 2.2))
        mean = self.seconds / n
        for i in range(n):
            proc = self.start_bridge()
            end = time.monotonic() + self.rng.uniform(0.25, max(0.3, 2 * mean - 0.25))
            while time.monotonic() < end and proc.poll() is None:
                self._sample(proc)
                self._run_main_jobs()
                time.sleep(0.05)
            self._reap_unexpected(proc)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                self.report.kills += 1
            if time.monotonic() > until and i + 1 >= MIN_KILLS:
                break

    # -- the run ----------------------------------------------------------------------------
    def run(self, drain_timeout: float) -> Report:
        started = time.monotonic()
        self.receiver = ThreadedReceiver()
        self.receiver.start()
        self.loop = LoopThread()
        self.relay = FaultRelay(self.dovecot.host, self.dovecot.pop3_port)
        self.loop.call(self.relay.start())
        self.boxes = [
            Mailbox("tls-delete", self.dovecot.add_user(), delete=True, via_relay=False),
            Mailbox("tls-keep", self.dovecot.add_user(), delete=False, via_relay=False),
            Mailbox("relay-delete", self.dovecot.add_user(), delete=True, via_relay=True),
            Mailbox("relay-keep", self.dovecot.add_user(), delete=False, via_relay=True),
        ]
        self._watch_done = threading.Event()
        threads: list[threading.Thread] = []
        try:
            with small_disk(self.workdir) as (disk, limited):
                self.disk_dir, self.disk_limited = disk, limited
                if not limited:
                    self.report.notes.append("tmpfs mount failed (not root?): no disk-full fault")
                db = disk / "state.db"
                self.cfg = self._config(db, self.relay.port)
                for _ in range(20):  # some mail waiting before the first start
                    self.feed_one()
                threads = [
                    threading.Thread(target=fn, daemon=True, name=name)
                    for fn, name in (
                        (self._feed, "feeder"),
                        (self._watch, "watcher"),
                        (self._inject, "injector"),
                    )
                ]
                for t in threads:
                    t.start()
                self._kill_loop(until=started + self.seconds)
                self._stop.set()  # feeder and injector end; the watcher goes on
                for t in threads:
                    if t.name != "watcher":
                        t.join(30)
                self._calm()
                self._until_relay_faults_fired(MIN_RELAY_FAULTS, timeout=60)
                self._drain(drain_timeout)
                self._watch_done.set()
                for t in threads:
                    t.join(10)
                self.report.dead_lettered = asyncio.run(_dead_letters(f"sqlite:///{db}"))
                _copy_db(db, self.workdir / "state-after.db")  # for a post-mortem
                self._audit_trails(self.workdir / "state-after.db")
        finally:
            self._stop.set()
            self._watch_done.set()
            if self.bridge is not None and self.bridge.poll() is None:
                self.bridge.kill()
                self.bridge.wait(10)
            if not self.dovecot.running:
                self.dovecot.start()
            self.report.relay_fired = Counter(self.relay.applied)
            self.loop.call(self.relay.stop())
            self.loop.close()
            self.receiver.close()
        self._tally()
        self.report.seconds = time.monotonic() - started
        return self.report

    def _calm(self) -> None:
        """End the faults that persist: receiver up, relay clean, Dovecot running. (Scripted
        receiver failures left over are consumed by the drain like any other failure.)"""
        self._run_main_jobs()
        self.receiver.start()  # no-op when it is up
        self.loop.run(self.relay.clear)
        if not self.dovecot.running:
            self.dovecot.start()

    def _relay_faults_fired(self) -> int:
        async def count() -> int:  # read on the relay's loop, where it is written
            return sum(self.relay.applied.values())

        return self.loop.call(count())

    def _until_relay_faults_fired(self, wanted: int, timeout: float) -> None:
        """The chaos queues relay faults at random moments, and a SIGKILL often comes before
        a session meets one: on a loaded machine fewer than `wanted` may have fired by the
        end. Then a bridge runs with a login error queued for each relay session (every one
        logs in, so each fires) until `wanted` have, and is SIGKILLed like the others: the
        faults are then known to have hit sessions, whatever the machine's speed."""
        during = self._relay_faults_fired()
        if during >= wanted:
            return
        self.report.notes.append(f"{during} relay fault(s) fired during the chaos; topped up")
        proc = self.start_bridge()
        deadline = time.monotonic() + timeout
        fault = RelayFault("login_error", status="-ERR [SYS/TEMP] try again later")
        while (
            self._relay_faults_fired() < wanted
            and time.monotonic() < deadline
            and proc.poll() is None
        ):
            if self.relay.pending == 0:
                self.loop.run(lambda: self.relay.queue(fault))
            self._sample(proc)
            time.sleep(0.1)  # the step of a condition poll (deadline above)
        self._reap_unexpected(proc)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            self.report.kills += 1
        self.loop.run(self.relay.clear)

    def _deleted_what_was_delivered(self) -> bool:
        """Every delivered message of a delete-mode mailbox is gone from the server."""
        delivered = set(self.delivered_ids())
        present = {box.account: self._present(box.user) for box in self.boxes if box.delete}
        return not any(
            s.file in present[s.box.account]
            for s in self.sent
            if s.box.delete and s.soak_id in delivered
        )

    def _drain(self, timeout: float) -> None:
        """Run the bridge undisturbed until everything sent arrived, then SIGTERM it."""
        proc = self.start_bridge()
        wanted = {s.soak_id for s in self.sent}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            self._sample(proc)
            if wanted <= set(self.delivered_ids()):
                break
            time.sleep(0.2)  # the step of a condition poll (deadline above)
        # More polls, until delete-mode accounts have DELEd what was just delivered (what is
        # left is reported as left_on_server_delete_mode, not asserted).
        settle = time.monotonic() + 15
        while (
            time.monotonic() < settle
            and proc.poll() is None
            and not self._deleted_what_was_delivered()
        ):
            self._sample(proc)
            time.sleep(0.2)  # the step of a condition poll (deadline above)
        self._reap_unexpected(proc)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.report.clean_exit = proc.wait(20) == 0

    def _classify(self, lost: list[str]) -> Counter[str]:
        """Why each undelivered message is undelivered: a post-mortem for a failed run.

        "on server, never recorded" and "recorded, pending" mean the drain ran out of time;
        "store says delivered" or "gone from server" without a 2xx would be real losses.
        """
        db = self.workdir / "state-after.db"
        by_id = {s.soak_id: s for s in self.sent}
        present = {box.account: self._present(box.user) for box in self.boxes}
        out: Counter[str] = Counter()
        for soak_id in lost:
            state = _outbox_state(db, soak_id) if db.exists() else None
            on_server = by_id[soak_id].file in present[by_id[soak_id].box.account]
            if state is None:
                out["on server, never recorded" if on_server else "GONE, never recorded"] += 1
            else:
                out[f"recorded, {state}" + ("" if on_server else ", gone from server")] += 1
        return out

    def _audit_trails(self, db: Path) -> None:
        """Check the guarantees from the custody trails alone: every DELE (and every removal
        it caused or saw) comes after the message's first 2xx, and every message that left a
        delete-mode mailbox has a trail that proves its delivery came first."""
        trails = asyncio.run(_trails(f"sqlite:///{db}", [b.account for b in self.boxes]))
        r = self.report
        r.trails_checked = len(trails)
        by_soak: dict[str, list[Any]] = {}
        for events in trails.values():
            first_2xx = min((e.at for e in events if e.event == "delivered"), default=None)
            for e in events:
                if e.event in ("dele_sent", "deleted", "vanished") and (
                    first_2xx is None or e.at < first_2xx
                ):
                    r.trail_dele_before_2xx += 1
                    r.notes.append(f"trail: {e.event} before 2xx for {e.msg_id}")
                    break
            mid = next((e.message_id for e in events if e.message_id), "") or ""
            by_soak[mid.strip("<>").split("@", 1)[0]] = events
        for box in self.boxes:
            if not box.delete:
                continue
            present = self._present(box.user)
            for sent in self.sent:
                if sent.box is not box or sent.file in present:
                    continue
                events = by_soak.get(sent.soak_id, [])
                removal = [e.at for e in events if e.event in ("dele_sent", "deleted", "vanished")]
                delivered = [e.at for e in events if e.event == "delivered"]
                if not removal or not delivered or min(delivered) > min(removal):
                    r.trail_removed_unproven += 1
                    r.notes.append(f"trail: {sent.soak_id} left the server, no proof of delivery")

    def _tally(self) -> None:
        r = self.report
        delivered = self.delivered_ids()
        sent_ids = {s.soak_id for s in self.sent}
        r.sent = len(sent_ids)
        r.delivered_unique = len(sent_ids & set(delivered))
        r.deliveries = len(self.receiver.delivered)
        per_soak: Counter[str] = Counter()
        for rq in self.receiver.delivered:
            mid = (rq.json or {}).get("data", {}).get("message_id") or ""
            per_soak[mid.strip("<>").split("@", 1)[0]] += 1
        r.duplicates = sum(n - 1 for n in per_soak.values())
        r.duplicate_ids_consistent = all(len(ids) == 1 for ids in delivered.values())
        r.lost = len(sent_ids - set(delivered)) - r.dead_lettered
        r.deleted_before_delivery = len(self.violations)
        lost = sorted(sent_ids - set(delivered))
        if lost:
            where = Counter(s.box.account for s in self.sent if s.soak_id in lost)
            r.notes.append(f"lost per account: {dict(where)}; first: {lost[:8]}")
            r.notes.append(f"lost by state: {dict(self._classify(lost))}")
        if self.violations:
            r.notes.append(f"deleted before delivery: {self.violations[:8]}")
        r.invalid_signatures = self.receiver.invalid
        with contextlib.suppress(FileNotFoundError):
            r.asyncio_errors = sum(
                1
                for line in self.log.read_text(errors="replace").splitlines()
                if '"logger":"asyncio"' in line and '"level":"ERROR"' in line
            )
        for box in self.boxes:
            if box.delete:
                r.left_on_server_delete_mode += len(self._present(box.user))


def _copy_db(db: Path, to: Path) -> None:
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(db)) as src,
        contextlib.closing(sqlite3.connect(to)) as dst,
    ):
        src.backup(dst)


def _outbox_state(db: Path, soak_id: str) -> str | None:
    """The outbox state of the row whose raw message carries `soak_id`, if any."""
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(db)) as conn:
        row = conn.execute(
            "SELECT o.state FROM outbox o JOIN bodies b ON b.id = o.id WHERE instr(b.raw, ?) > 0",
            (soak_id.encode(),),
        ).fetchone()
        return None if row is None else str(row[0])
    return None


async def _trails(url: str, accounts: list[str]) -> dict[str, list[Any]]:
    """Every custody trail of `accounts` in the store, by msg_id."""
    store = open_store(url)
    try:
        await store.migrate()
        ids: set[str] = set()
        for account in accounts:
            ids.update(await store.custody_lookup(account=account))
        return {m: await store.custody_trail(m) for m in sorted(ids)}
    finally:
        await store.close()


async def _dead_letters(url: str) -> int:
    store = open_store(url)
    try:
        await store.migrate()
        return len(await store.dead_letters(limit=100_000))
    finally:
        await store.close()


def run_soak(
    dovecot: DovecotServer,
    workdir: Path,
    *,
    seconds: float,
    seed: int | None = None,
    drain_timeout: float = 60,
) -> Report:
    seed = random.randrange(1_000_000) if seed is None else seed
    return Soak(dovecot, workdir, seconds=seconds, seed=seed).run(drain_timeout)


def main(argv: list[str] | None = None) -> int:
    from tests.support.certs import make_test_certs
    from tests.support.dovecot import dovecot_available

    parser = argparse.ArgumentParser(prog="python -m tests.soak.run", description=__doc__)
    parser.add_argument("--minutes", type=float, default=3.0, help="chaos phase length")
    parser.add_argument("--seed", type=int, default=None, help="replay a run's fault schedule")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    ok, why = dovecot_available()
    if not ok:
        print(f"soak needs Dovecot: {why}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="pop3bridge-soak-"))
    dovecot = DovecotServer(make_test_certs(workdir / "certs"))
    dovecot.start()
    try:
        report = run_soak(
            dovecot,
            workdir,
            seconds=args.minutes * 60,
            seed=args.seed,
            drain_timeout=max(60.0, args.minutes * 20),
        )
    finally:
        dovecot.stop()
    print(report.render())
    if args.keep or not report.ok:
        print(f"  work directory (bridge.log): {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    if report.ok and not args.keep:
        dovecot.close()
    else:
        print(f"  dovecot directory (maildirs, log): {dovecot.root}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Issue 19, finding 1, the two paths that still parsed mail in the main process.

- With `attachments:` links, a message over half the inline limit is parsed when it is fetched
  (its attachments' contents go into the store with the row). That parse now runs in the parse
  workers (`RowJob`): a message over `parse_timeout`, or one that kills its worker, is recorded
  once with the degraded payload and its raw content by link.
- The proxy's tap parsed copies in a thread of the proxy process, where a parse holds the GIL
  the proxy's event loop needs. Copies now become rows the way the poller's do
  (`isolated_row`): kept raw, or parsed in the same workers.
"""

from __future__ import annotations

import asyncio
import base64
import poplib
import signal
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

from bridge.attachments.signing import RAW
from bridge.outbox import ParseLimits, ParsePool, isolated_row
from bridge.store.base import NewMessage
from bridge.testing.fakepop3 import FakePOP3Server
from tests.attachments.support import minter
from tests.e2e.harness import Receiver
from tests.proxy.test_tap_process import start_proxy
from tests.security.cli import fake_account_config as account
from tests.security.cli import run_until_delivered
from tests.security.test_parse_isolation import (
    SHAPES,
    delivered_once_with_two_bombs,
    slow_but_under_the_caps,
    worker_killer,
)
from tests.support.dovecot import free_port
from tests.support.loop import LoopThread
from tests.support.receiver import ThreadedReceiver

MB = 1_000_000
LIMIT = 64 * 1024  # attachment_inline_limit: every bomb below is over half of it
NOW = 1_700_000_000.0


async def linked_row(raw: bytes, uidl: str = "u1") -> NewMessage:
    """The row the poller's fetch makes with attachment links configured."""
    return await isolated_row(
        raw,
        account="acct",
        uidl=uidl,
        size=len(raw),
        webhook="main",
        now=NOW,
        attachment_inline_limit=LIMIT,
        include_raw=False,
        defer=True,
        links=minter(),
    )


def rendered(row: NewMessage) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(minter().render(row.payload, row.msg_id, NOW + 60))["data"]
    return data


def raw_link_content(row: NewMessage) -> bytes:
    [link] = [link for link in row.links if link.part == RAW]
    return b"".join(link.chunks(65536))


async def test_a_slow_message_with_links_is_parsed_in_a_worker_and_degraded() -> None:
    pool = ParsePool(1, ParseLimits(cpu_seconds=0.2))
    try:
        slow = slow_but_under_the_caps(8000)  # under every cap, ~3 s of CPU in full
        ok = b"From: a@example.com\r\nSubject: fine\r\n\r\n" + b"hello\r\n" * 8000
        started = time.process_time()
        bomb, fine = await asyncio.gather(linked_row(slow), linked_row(ok, "u2"))
        spent = time.process_time() - started
    finally:
        pool.close()
    # The parse ran in the worker: this process spent well under the full parse's CPU.
    assert spent < 1.0, f"{spent:.2f}s of CPU in the main process"
    data = rendered(bomb)
    assert "poller.parse_timeout (0.2s of CPU)" in data["parse_errors"][0]
    assert data["subject"] == "bomb" and data["attachments"] == []
    assert data["raw"] is None and data["raw_url"].startswith("https://files.example.test/")
    assert raw_link_content(bomb) == slow  # never lost: the receiver can fetch all of it
    assert bomb.raw == slow and bomb.fingerprint  # kept for the custody trail, fingerprinted
    assert rendered(fine)["parse_errors"] == [] and rendered(fine)["subject"] == "fine"


async def test_a_message_with_links_that_kills_its_worker_is_recorded_with_its_raw_link() -> None:
    pool = ParsePool(1, ParseLimits(cpu_seconds=60))
    try:
        slow = slow_but_under_the_caps(6000)
        with worker_killer(pool, cpu_over=0.6) as killed:
            row = await linked_row(slow)
        after = await linked_row(b"From: a@example.com\r\nSubject: after\r\n\r\n" + b"x" * LIMIT)
    finally:
        pool.close()
    assert killed and pool.restarts >= 2  # the batch, then the message alone
    data = rendered(row)
    assert "process died" in data["parse_errors"][0]
    assert data["subject"] is None  # not even the header block was read here
    assert raw_link_content(row) == slow
    assert rendered(after)["subject"] == "after"  # the pool keeps working


def test_healthz_and_another_account_keep_going_while_a_linked_bomb_is_parsed(
    tmp_path: Path,
) -> None:
    bombs = [
        slow_but_under_the_caps(8000),  # ~3 s of parsing, under every cap: over parse_timeout
        SHAPES["content-type parameters"](3 * MB),  # capped
    ]
    normal = [b"From: a@example.com\r\nSubject: normal %d\r\n\r\nhi\r\n" % i for i in range(3)]
    other = [b"From: b@example.com\r\nSubject: other %d\r\n\r\nhi\r\n" % i for i in range(6)]
    receiver = Receiver()
    receiver.start()
    ops_port = free_port()
    with LoopThread() as loop:
        victim = FakePOP3Server([normal[0], bombs[0], normal[1], bombs[1], normal[2]])
        bystander = FakePOP3Server(other[:3])
        loop.call(victim.start())
        loop.call(bystander.start())
        config = {
            "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
            "webhooks": [
                {
                    "name": "main",
                    "url": receiver.url,
                    "secret": receiver.secret,
                    "timeout": 10,
                    "attachment_inline_limit": LIMIT,
                }
            ],
            "attachments": {
                "enabled": True,
                "port": free_port(),
                "public_url": "https://files.example.test",
                "signing_key": "t" * 40,
            },
            "accounts": [account("victim", victim), account("bystander", bystander)],
            "poller": {"jitter": 0, "shutdown_grace": 2, "parse_timeout": "1s"},
            "ops": {"enabled": True, "port": ops_port},
            "logging": {"format": "json", "level": "INFO"},
        }
        expected = 5 + len(other)

        def more_mail() -> None:  # mail keeps arriving for the bystander meanwhile
            if len(receiver.delivered) >= 3 and len(bystander.mailbox) < len(other):
                bystander.mailbox.extend(other[3:])

        try:
            latencies = run_until_delivered(
                config,
                tmp_path,
                done=lambda: len(receiver.delivered) >= expected,
                servers=[victim, bystander],
                ops_port=ops_port,
                each=more_mail,
            )
        finally:
            loop.call(victim.stop())
            loop.call(bystander.stop())
            receiver.close()
    output = (tmp_path / "bridge.log").read_text(errors="replace")
    datas, degraded = delivered_once_with_two_bombs(receiver, expected, latencies, output)
    assert {f"other {i}" for i in range(6)} <= {d["subject"] for d in datas}
    # Over the inline limit, so the raw message goes by link, never dropped.
    assert all(d["raw"] is None and d["raw_url"] for d in degraded)


# --- the proxy's tap -----------------------------------------------------------------------


def round_trips(port: int, stop: threading.Event, latencies: list[float]) -> None:
    """Another client's session through the proxy: STAT round trips until `stop`."""
    conn = poplib.POP3("127.0.0.1", port, timeout=30)
    try:
        conn.user("bob@other.test")
        conn.pass_("password")
        while not stop.is_set():
            started = time.monotonic()
            conn.stat()
            latencies.append(time.monotonic() - started)
            time.sleep(0.02)  # pacing: a round trip every 20 ms
        conn.quit()
    finally:
        conn.close()


def test_a_tapped_bomb_does_not_stall_other_proxy_sessions(tmp_path: Path) -> None:
    bomb = slow_but_under_the_caps(12000)  # ~5 s of parsing in full, under every cap
    with LoopThread() as loop, ThreadedReceiver() as rx:
        bombed = FakePOP3Server([bomb], user="ann@bomb.test")
        quiet = FakePOP3Server([b"Subject: quiet\r\n\r\nhi\r\n"], user="bob@other.test")
        loop.call(bombed.start())
        loop.call(quiet.start())
        config = {
            "logging": {"format": "json", "level": "INFO"},
            "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
            "webhooks": [{"name": "copies", "url": rx.url, "secret": rx.secret}],
            "poller": {"parse_timeout": "1s"},
            "proxy": {
                "shutdown_grace": 10,
                "listeners": [{"name": "plain", "port": 0}],
                "routes": [
                    {
                        "match": "*@bomb.test",
                        "upstream": {"host": "127.0.0.1", "port": bombed.port, "tls": "none"},
                        "tap": {"webhook": "copies"},
                    },
                    {
                        "match": "*",
                        "upstream": {"host": "127.0.0.1", "port": quiet.port, "tls": "none"},
                    },
                ],
            },
        }
        proc, port = start_proxy(config, tmp_path)
        proxy = psutil.Process(proc.pid)
        latencies: list[float] = []
        stop = threading.Event()
        other = threading.Thread(target=round_trips, args=(port, stop, latencies))
        try:
            other.start()
            started = sum(proxy.cpu_times()[:2])  # the proxy process itself, not its children
            conn = poplib.POP3("127.0.0.1", port, timeout=30)
            conn.user("ann@bomb.test")
            conn.pass_("password")
            conn.retr(1)
            conn.quit()
            rx.wait_for(1, timeout=60)  # the copy was parsed (degraded) and delivered
            spent = sum(proxy.cpu_times()[:2]) - started
        finally:
            stop.set()
            other.join(30)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            loop.call(bombed.stop())
            loop.call(quiet.stop())
    log = (tmp_path / "proxy.log").read_text(errors="replace")
    assert code == 0, log[-3000:]
    [copy] = [r.json["data"] for r in rx.verified]
    assert copy["source"] == "proxy" and copy["subject"] == "bomb"
    assert "poller.parse_timeout (1s of CPU)" in copy["parse_errors"][0]
    assert copy["size"] == len(bomb)
    assert base64.b64decode(copy["raw"]) == bomb  # the exact message, headers-only payload
    # The other session kept going through the copy (at least a second of the worker's CPU):
    # a handful of round trips, however slow a loaded machine makes each one.
    assert len(latencies) >= 5, latencies
    assert max(latencies) < 1.0, sorted(latencies)[-5:]
    # Relaying, hashing and handing 8 MB to a worker: a fraction of the ~5 s the parse takes.
    print(f"proxy process CPU while the bomb was copied: {spent:.2f}s")
    assert spent < 2.5, f"{spent:.2f}s of CPU in the proxy process: the parse ran there"

"""Issue 19, finding 1: hostile mail cannot stall, bloat or crash-loop the poller.

Parts of the stdlib `email` parser are quadratic in one header field's length (CPython
gh-136063: `email.message._parseparam` behind `get_param`/`get_filename`, the address parser
behind `getaddresses`, the header value parser's token loops). Before this change a 3 MB
`Content-Type: text/plain; a=b; a=b; ...` held the poller's event loop for over a minute.

- Every published shape, at 2 MB, is turned by the cheap caps into the degraded payload in
  milliseconds (they cost seconds to tens of seconds before).
- Mail is parsed in worker processes with a CPU-time limit: a message under the caps that still
  takes too long is delivered degraded, exactly once; one that kills its worker is delivered
  with its raw content, and the pool keeps working.
- `pop3bridge run` keeps answering /healthz within 1 s while a bomb is parsed, and every other
  message of the mailbox is delivered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from bridge import mail
from bridge.outbox import BodyJob, BodySpec, ParseLimits, ParsePool
from bridge.store.base import OutboxItem
from bridge.testing.fakepop3 import FakePOP3Server
from tests.e2e.harness import Receiver
from tests.security.cli import fake_account_config, run_until_delivered
from tests.support.dovecot import free_port
from tests.support.loop import LoopThread
from tests.support.outbox import T0, claimed_row

MB = 1_000_000


def message(header: bytes, body: bytes = b"body\r\n") -> bytes:
    return b"From: Eve <eve@example.com>\r\nSubject: bomb\r\n" + header + b"\r\n\r\n" + body


def multipart(part_header: bytes) -> bytes:
    return message(
        b"Content-Type: multipart/mixed; boundary=zz",
        b"--zz\r\n" + part_header + b"\r\n\r\nhi\r\n--zz--\r\n",
    )


# The published slow shapes, each `size` bytes long.
SHAPES: dict[str, Callable[[int], bytes]] = {
    "content-type parameters": lambda n: message(
        b"Content-Type: text/plain; " + b"a=b; " * (n // 5)
    ),
    "at signs in To": lambda n: message(b"To: " + b"@" * n),
    "address list": lambda n: message(b"To: " + b"a@b," * (n // 4)),
    "encoded words": lambda n: message(b"Subject: " + b"=?utf-8?q?a?= " * (n // 14)),
    "part disposition parameters": lambda n: multipart(
        b"Content-Disposition: attachment; " + b"a=b; " * (n // 5)
    ),
    "RFC 2231 continuations": lambda n: message(
        b"Content-Type: text/plain; " + b"".join(b"name*%d=a; " % i for i in range(n // 12))
    ),
    "small parameters, many of them": lambda n: message(
        b"Content-Type: text/plain; " + b"a=b; " * 150
    ),
    "many addresses, short field": lambda n: message(b"Cc: " + b"a@b," * 1500),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_known_quadratic_shape_is_capped_before_the_parse(shape: str) -> None:
    raw = SHAPES[shape](2 * MB)
    started = time.process_time()
    data = mail.build_message_data(raw, attachment_inline_limit=1 << 20, include_raw=False)
    spent = time.process_time() - started
    # Before the caps: 2.5 s (address list) to over 30 s (parameters) of CPU at 2 MB.
    assert spent < 0.5, f"{shape}: {spent:.2f}s of CPU"
    assert data["parse_errors"][0].endswith("headers only, raw message attached")
    assert "the limit is" in data["parse_errors"][0]
    assert base64.b64decode(data["raw"]) == raw  # the receiver still gets everything
    assert data["subject"] == "bomb" and data["from"][0]["address"] == "eve@example.com"
    assert data["text"] is None and data["attachments"] == []


def test_ordinary_mail_is_not_capped() -> None:
    """Real mail sits far below every cap: a long To list, a long RFC 2231 filename."""
    names = b",".join(b"Person %d <p%d@example.com>" % (i, i) for i in range(300))
    raw = message(
        b"To: " + names + b"\r\nContent-Type: text/plain; charset=utf-8; format=flowed",
        b"hello\r\n",
    )
    data = mail.build_message_data(raw, attachment_inline_limit=1 << 20, include_raw=False)
    assert data["parse_errors"] == [] and len(data["to"]) == 300
    assert data["text"] == "hello\r\n" or data["text"].strip() == "hello"


def slow_but_under_the_caps(parts: int) -> bytes:
    """Under every cap, yet about 0.4 ms of parsing per part: the shape nobody published yet."""
    params = b"; ".join(b"p%d=v" % i for i in range(90))
    # Each part's field differs (n=...): the payload builder remembers what it read from a
    # field value it has seen before.
    body = b"".join(
        b"--zz\r\nContent-Type: text/plain; n=%d; " % n + params + b"\r\n\r\nx\r\n"
        for n in range(parts)
    )
    return message(b"Content-Type: multipart/mixed; boundary=zz", body + b"--zz--\r\n")


async def build(pool: ParsePool, item: OutboxItem) -> bytes:
    return await pool.run(BodyJob(BodySpec(1 << 20, False), item, T0))


def data_of(body: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(body)["data"]
    return parsed


OK = b"From: a@example.com\r\nSubject: fine\r\n\r\nhello\r\n"


async def test_a_message_over_its_cpu_time_is_delivered_degraded() -> None:
    pool = ParsePool(1, ParseLimits(cpu_seconds=0.2))
    try:
        slow = slow_but_under_the_caps(4000)  # ~1.5 s of CPU in full
        results = await asyncio.gather(
            build(pool, claimed_row(OK, 1)),
            build(pool, claimed_row(slow, 2)),
            build(pool, claimed_row(OK, 3)),
        )
        fine1, degraded, fine3 = (data_of(body) for body in results)
        assert fine1["subject"] == fine3["subject"] == "fine" and fine1["parse_errors"] == []
        assert degraded["subject"] == "bomb"  # the header fields survive
        assert "poller.parse_timeout (0.2s of CPU)" in degraded["parse_errors"][0]
        assert base64.b64decode(degraded["raw"]) == slow
        assert pool.restarts == 0  # a timeout costs no worker
    finally:
        pool.close()


@contextlib.contextmanager
def worker_killer(pool: ParsePool, cpu_over: float) -> Iterator[list[int]]:
    """Kills any parse worker that has spent `cpu_over` seconds of CPU (a stand-in for a
    message that crashes the parser or the kernel's OOM killer)."""
    killed: list[int] = []
    stop = False

    def watch() -> None:
        while not stop:
            for pid in pool.pids():
                with contextlib.suppress(psutil.Error, ValueError):
                    process = psutil.Process(pid)
                    times = process.cpu_times()
                    if times.user + times.system > cpu_over:
                        process.kill()
                        killed.append(pid)
            time.sleep(0.02)

    import threading

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        stop = True
        thread.join(5)


async def test_a_message_that_kills_its_worker_is_delivered_raw_and_the_pool_recovers() -> None:
    pool = ParsePool(1, ParseLimits(cpu_seconds=60))
    try:
        slow = slow_but_under_the_caps(6000)
        with worker_killer(pool, cpu_over=0.6) as killed:
            results = await asyncio.gather(
                build(pool, claimed_row(OK, 1)),
                build(pool, claimed_row(slow, 2)),
            )
        fine, lost = (data_of(body) for body in results)
        assert killed and pool.restarts >= 2  # the batch, then the message alone
        assert fine["subject"] == "fine" and fine["parse_errors"] == []  # retried alone
        assert "process died" in lost["parse_errors"][0]
        assert base64.b64decode(lost["raw"]) == slow  # never lost
        # The pool keeps working afterwards.
        body = await build(pool, claimed_row(OK, 3))
        assert data_of(body)["subject"] == "fine"
    finally:
        pool.close()


# --- the whole poller: /healthz stays quick while a bomb is parsed ----------------------------


def test_healthz_answers_within_a_second_while_a_bomb_is_parsed(tmp_path: Path) -> None:
    bombs = [
        SHAPES["content-type parameters"](3 * MB),  # capped
        slow_but_under_the_caps(8000),  # ~3 s of parsing: over parse_timeout
    ]
    normal = [b"From: a@example.com\r\nSubject: normal %d\r\n\r\nhi\r\n" % i for i in range(5)]
    mailbox = [normal[0], bombs[0], normal[1], bombs[1], *normal[2:]]
    receiver = Receiver()
    receiver.start()
    ops_port = free_port()
    with LoopThread() as loop:
        server = FakePOP3Server(mailbox)
        loop.call(server.start())
        config = {
            "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
            "webhooks": [
                {"name": "main", "url": receiver.url, "secret": receiver.secret, "timeout": 10}
            ],
            "accounts": [fake_account_config("victim", server)],
            "poller": {"jitter": 0, "shutdown_grace": 2, "parse_timeout": "1s"},
            "ops": {"enabled": True, "port": ops_port},
            "logging": {"format": "json", "level": "INFO"},
        }
        try:
            latencies = run_until_delivered(
                config,
                tmp_path,
                done=lambda: len(receiver.delivered) >= len(mailbox),
                servers=[server],
                ops_port=ops_port,
            )
        finally:
            loop.call(server.stop())
            receiver.close()
    output = (tmp_path / "bridge.log").read_text(errors="replace")
    datas, degraded = delivered_once_with_two_bombs(receiver, len(mailbox), latencies, output)
    assert {f"normal {i}" for i in range(5)} <= {d["subject"] for d in datas}
    assert all(d["raw"] for d in degraded)
    json.loads(output.splitlines()[0])  # the log is still JSON lines


def delivered_once_with_two_bombs(
    receiver: Receiver, expected: int, latencies: list[float], output: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What a whole-poller bomb run must show: each message delivered exactly once, the
    ordinary ones parsed cleanly, the two bombs degraded (one over parse_timeout, one over a
    cap), and /healthz answering within a second throughout. (data of all, data of bombs)"""
    delivered = receiver.delivered
    assert len(delivered) == expected, output[-3000:]
    assert len({r.msg_id for r in delivered}) == expected  # each exactly once
    datas = [r.json["data"] for r in delivered]
    assert all(d["parse_errors"] == [] for d in datas if d["subject"] != "bomb")
    degraded = [d for d in datas if d["subject"] == "bomb"]
    assert len(degraded) == 2
    reasons = sorted(d["parse_errors"][0] for d in degraded)
    assert any("parse_timeout" in r for r in reasons), reasons
    assert any("parameters" in r or "bytes long" in r for r in reasons), reasons
    assert len(latencies) > 20
    assert max(latencies) < 1.0, sorted(latencies)[-5:]
    return datas, degraded


# --- a SIGKILLed bridge leaves no parse worker behind ----------------------------------------

OWNER = """
import asyncio, time
from bridge.outbox import BodyJob, BodySpec, ParsePool
from tests.support.outbox import claimed_row

async def main():
    pool = ParsePool(1)
    row = claimed_row(b"Subject: x\\r\\n\\r\\nx\\r\\n", 1)
    await pool.run(BodyJob(BodySpec(1024, False), row, 0.0))
    print(*pool.pids(), flush=True)
    time.sleep(600)  # the stimulus: alive, holding its workers, until the test SIGKILLs it

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_parse_workers_exit_when_the_bridge_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=root,
        stdout=subprocess.PIPE,
        env={"PYTHONPATH": str(root)},
    )
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids and all(psutil.pid_exists(p) for p in pids)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 15
    while any(psutil.pid_exists(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert not alive, "parse workers outlived their SIGKILLed owner"

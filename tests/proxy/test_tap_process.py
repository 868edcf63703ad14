"""The tap end to end: `pop3bridge proxy` (a subprocess) in front of Dovecot, poplib as the
client, a real webhook receiver (signatures verified with `standardwebhooks`)."""

from __future__ import annotations

import asyncio
import base64
import os
import poplib
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.proxy.tap import tap_account
from bridge.store import open_store
from bridge.testing.samples import generate_messages
from tests.mail.mail_schema_check import VALIDATOR
from tests.support.announce import parse_announcement
from tests.support.receiver import ThreadedReceiver

pytestmark = pytest.mark.dovecot

DOTTED = (
    b"From: Dot <dot@example.org>\r\nTo: you@example.org\r\nSubject: dots\r\n"
    b"Message-ID: <dots-1@example.org>\r\nDate: Fri, 01 Mar 2024 09:30:00 +0000\r\n\r\n"
    b"first line\r\n.a line that starts with a dot\r\n..two dots\r\n.\r\nlast\r\n"
)


def hook(rx: ThreadedReceiver) -> dict[str, Any]:
    return {"name": "copies", "url": rx.url, "secret": rx.secret}


def tap_config(tmp: Path, dovecot: Any, webhook: dict[str, Any]) -> dict[str, Any]:
    """`pop3bridge proxy` in front of Dovecot's plain port, copying every user's RETRs to
    `webhook` (named "copies")."""
    upstream = {"host": dovecot.host, "port": dovecot.pop3_port, "tls": "none"}
    return {
        "logging": {"format": "json", "level": "INFO"},
        "state": {"url": f"sqlite:///{tmp / 'state.db'}"},
        "webhooks": [webhook],
        "proxy": {
            "shutdown_grace": 10,
            "listeners": [{"name": "plain", "port": 0}],
            "routes": [{"match": "*", "upstream": upstream, "tap": {"webhook": "copies"}}],
        },
    }


def start_proxy(config: dict[str, Any], tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    path = tmp / "proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "proxy", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=(tmp / "proxy.log").open("wb"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            break
        said = parse_announcement(line)
        if said and said["event"] == "listening":
            return proc, int(said["port"])
    proc.kill()
    proc.wait()
    raise AssertionError("proxy did not start: " + (tmp / "proxy.log").read_text())


def fetch(port: int, user: str, password: str) -> list[bytes]:
    conn = poplib.POP3("127.0.0.1", port, timeout=20)
    try:
        conn.user(user)
        conn.pass_(password)
        count = conn.stat()[0]
        got = [b"\r\n".join(conn.retr(n)[1]) + b"\r\n" for n in range(1, count + 1)]
        conn.quit()
    finally:
        conn.close()
    return got


async def _pending(db: Path) -> int:
    store = open_store(f"sqlite:///{db}")
    try:
        return await store.pending_count()
    finally:
        await store.close()


def test_messages_retrieved_through_the_proxy_reach_the_webhook(
    dovecot: Any, dovecot_user: Any, tmp_path: Path
) -> None:
    mail = [*generate_messages(2, seed=61), DOTTED]
    dovecot.deliver_many(dovecot_user, mail)
    with ThreadedReceiver() as rx:
        config = tap_config(tmp_path, dovecot, {**hook(rx), "include_raw": True})
        proc, port = start_proxy(config, tmp_path)
        try:
            served = fetch(port, dovecot_user.name, dovecot_user.password)
            rx.wait_for(3, timeout=20)
            again = fetch(port, dovecot_user.name, dovecot_user.password)  # no new webhooks
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        log = (tmp_path / "proxy.log").read_text(errors="replace")
        verified = list(rx.verified)
        invalid = rx.invalid
    assert code == 0, log
    assert again == served and len(served) == 3
    # No waiting needed to see that the second fetch sent nothing new: the proxy records every
    # copy and finishes its sends before it exits (shutdown_grace), so a second row would be a
    # fourth webhook above or a row still pending in the state database here.
    assert invalid == 0 and len(verified) == 3, log
    assert asyncio.run(_pending(tmp_path / "state.db")) == 0
    by_subject = {r.json["data"]["subject"]: r.json for r in verified}
    assert len({r.msg_id for r in verified}) == 3
    for body, raw in zip(
        sorted(by_subject.values(), key=lambda b: b["data"]["size"]),
        sorted(served, key=len),
        strict=True,
    ):
        VALIDATOR.validate(body)
        data = body["data"]
        assert data["source"] == "proxy"
        assert data["account"] == tap_account("*", dovecot_user.name)
        # What the webhook carries is exactly what the client got, dot-unstuffed.
        assert base64.b64decode(data["raw"]) == raw and data["size"] == len(raw)
    dotted = by_subject["dots"]["data"]
    assert ".a line that starts with a dot" in dotted["text"]
    assert "..two dots" in dotted["text"]
    assert dovecot_user.password not in log


def test_tap_copies_carry_attachment_links_the_proxy_serves(
    dovecot: Any, dovecot_user: Any, tmp_path: Path
) -> None:
    import asyncio
    import hashlib
    import urllib.parse

    import aiohttp

    from tests.attachments.support import Part, message
    from tests.support.dovecot import free_port

    big = Part("report.pdf", "application/pdf", os.urandom(3 * 1024 * 1024))
    dovecot.deliver(dovecot_user, message(big))
    link_port = free_port()
    with ThreadedReceiver() as rx:
        config = tap_config(tmp_path, dovecot, hook(rx))
        config["attachments"] = {
            "enabled": True,
            "bind": "127.0.0.1",
            "port": link_port,
            "public_url": "https://files.example.test",
            "signing_key": "t" * 40,
        }
        proc, port = start_proxy(config, tmp_path)
        try:
            fetch(port, dovecot_user.name, dovecot_user.password)
            rx.wait_for(1, timeout=30)
            (body,) = [r.json for r in rx.verified]
            (item,) = body["data"]["attachments"]
            assert item["content"] is None and item["sha256"] == big.sha256
            parts = urllib.parse.urlsplit(item["url"])
            assert parts.netloc == "files.example.test"

            async def download() -> tuple[int, bytes]:
                url = f"http://127.0.0.1:{link_port}{parts.path}?{parts.query}"
                async with aiohttp.ClientSession() as session, session.get(url) as r:
                    return r.status, await r.read()

            status, data = asyncio.run(download())
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
    assert code == 0, (tmp_path / "proxy.log").read_text(errors="replace")
    assert status == 200 and hashlib.sha256(data).hexdigest() == big.sha256

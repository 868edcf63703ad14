"""Big attachments by link through a real `pop3bridge run`: Dovecot upstream, the signature-
checking receiver, and a real aiohttp client downloading from the bridge's link listener.

SQLite: a 200 KB attachment arrives inline and a 6 MB one as a link whose bytes hash to the
payload's sha256; once `url_ttl` (shortened) passes the link answers 403 expired, and once the
sweep purged the content a validly signed link answers 410. PostgreSQL: two replicas on one
store, each with its own listener, both serve the link whichever of them minted it.
`dlq replay` mints fresh links (a later expiry, a new signature, and they are served).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bridge.attachments.server import LinkServer
from bridge.attachments.signing import LinkSigner
from bridge.store import open_store
from tests.attachments.support import Part, message
from tests.e2e.harness import Receiver, dovecot_account
from tests.e2e.test_guarantees import once
from tests.e2e.test_ops import Bridge, run_config
from tests.support.dovecot import DovecotServer, DovecotUser, free_port
from tests.support.pgschema import drop_schema, schema_url
from tests.support.wait import wait_until_sync

pytestmark = pytest.mark.dovecot

KEY = "links-e2e-" + "x" * 40
SMALL = Part("small.png", "image/png", os.urandom(200 * 1024))
BIG = Part("scan.pdf", "application/pdf", os.urandom(6 * 1024 * 1024))


def _config(
    path: Path, state_url: str, receiver: Receiver, account: dict[str, Any], *, ttl: float
) -> tuple[int, int]:
    ops_port = run_config(path, state_url, receiver, [account])
    link_port = free_port()
    key_file = path.parent / "link.key"
    key_file.write_text(KEY + "\n")
    config = yaml.safe_load(path.read_text())
    config["attachments"] = {
        "enabled": True,
        "bind": "127.0.0.1",
        "port": link_port,
        "public_url": "https://files.example.test/mail",
        "signing_key_file": str(key_file),
        "url_ttl": ttl,
        "sweep_interval": 0.5,
    }
    config["logging"]["level"] = "INFO"
    path.write_text(yaml.safe_dump(config))
    return ops_port, link_port


def _local(url: str, port: int) -> str:
    """The public URL as the ingress would forward it to one replica's listener."""
    parts = urllib.parse.urlsplit(url)
    return f"http://127.0.0.1:{port}{parts.path}?{parts.query}"


def _download(url: str) -> tuple[int, bytes]:
    async def get() -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as session, session.get(url) as r:
            return r.status, await r.read()

    return asyncio.run(get())


def test_a_6_mb_attachment_by_link_through_pop3bridge_run(
    tmp_path: Path,
    dovecot: DovecotServer,
    dovecot_user: DovecotUser,
    receiver: Receiver,
    bridges: list[Bridge],
) -> None:
    dovecot.deliver(dovecot_user, message(SMALL, BIG))
    cfg = tmp_path / "c.yaml"
    ttl = 12.0
    ops_port, link_port = _config(
        cfg,
        f"sqlite:///{tmp_path / 's.db'}",
        receiver,
        dovecot_account(dovecot, dovecot_user),
        ttl=ttl,
    )
    bridge = Bridge(cfg, ops_port)
    bridges.append(bridge)
    bridge.wait("the delivery", lambda: len(receiver.delivered) == 1, timeout=60)
    data = receiver.delivered[0].json["data"]
    small, big = data["attachments"]
    assert small["content"] is not None and "url" not in small
    assert big["content"] is None and big["sha256"] == BIG.sha256 and big["size"] == len(BIG.data)
    assert big["url"].startswith(f"https://files.example.test/mail/a/{data['id']}/1?expires=")
    status, body = _download(_local(big["url"], link_port))
    assert status == 200 and hashlib.sha256(body).hexdigest() == big["sha256"]
    m = bridge.metrics()
    assert m.value("pop3bridge_attachment_link_requests_total", status="200") == 1
    assert m.value("pop3bridge_attachment_link_bytes_served_total") == len(BIG.data)
    bridge.wait(
        "the held-bytes gauge",
        lambda: bridge.metrics().value("pop3bridge_attachment_link_bytes_held") == len(BIG.data),
    )

    # After url_ttl: 403, saying expired; the sweep then purges the content.
    bridge.wait(
        "the link to expire",
        lambda: _download(_local(big["url"], link_port))[0] == 403,
        timeout=ttl + 30,
    )
    status, text = _download(_local(big["url"], link_port))
    assert status == 403 and b"expired" in text
    bridge.wait(
        "the purge",
        lambda: bridge.metrics().value("pop3bridge_attachment_link_purges_total") == 1,
    )
    assert bridge.metrics().value("pop3bridge_attachment_link_bytes_held") == 0
    # A correctly signed, unexpired link to purged content (one a replay or another replica
    # could have minted): 410.
    parts = urllib.parse.urlsplit(big["url"])
    path = parts.path.removeprefix("/mail")
    signer = LinkSigner("https://files.example.test/mail", [KEY.encode()])
    fresh = signer.url(
        data["id"], int(path.rsplit("/", 1)[1]), int(parts.query.split("&")[0].split("=")[1]) + 3600
    )
    status, text = _download(_local(fresh, link_port))
    assert status == 410 and b"purged" in text
    assert bridge.stop() == 0


@pytest.mark.postgres
def test_any_replica_serves_any_link_on_postgresql(
    tmp_path: Path,
    dovecot: DovecotServer,
    dovecot_user: DovecotUser,
    receiver: Receiver,
    bridges: list[Bridge],
    postgres_dsn: str,
) -> None:
    url = schema_url(postgres_dsn, "t_links")
    account = dovecot_account(dovecot, dovecot_user)
    ports = []
    for name in ("one", "two"):
        cfg = tmp_path / name / "c.yaml"
        cfg.parent.mkdir()
        ports.append(_config(cfg, url, receiver, account, ttl=3600))
        bridges.append(Bridge(cfg, ports[-1][0]))
    try:
        for bridge in bridges:
            bridge.wait("the ops endpoint", lambda b=bridge: b.get("/healthz")[0] == 200)
        dovecot.deliver(dovecot_user, message(BIG))
        bridges[0].wait("the delivery", lambda: len(receiver.delivered) >= 1, timeout=60)
        (big,) = receiver.delivered[0].json["data"]["attachments"]
        served = []
        for bridge, (_, link_port) in zip(bridges, ports, strict=True):
            status, body = _download(_local(big["url"], link_port))
            assert status == 200 and hashlib.sha256(body).hexdigest() == BIG.sha256
            served.append(
                bridge.metrics().value("pop3bridge_attachment_link_requests_total", status="200")
            )
        assert served == [1, 1]  # each replica served it once, from the shared store
        fetched = [
            b.metrics().value("pop3bridge_messages_fetched_total", account=account["name"])
            for b in bridges
        ]
        assert sorted(fetched) == [0, 1]  # exactly one of them minted it
    finally:
        for bridge in bridges:
            bridge.stop()
        asyncio.run(drop_schema(url))


def test_dlq_replay_mints_fresh_links(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: DovecotUser, receiver: Receiver
) -> None:
    dovecot.deliver(dovecot_user, message(BIG))
    cfg = tmp_path / "c.yaml"
    _config(
        cfg,
        f"sqlite:///{tmp_path / 's.db'}",
        receiver,
        dovecot_account(dovecot, dovecot_user),
        ttl=3600,
    )
    receiver.fail_next(1, status=410)  # permanent: a dead letter at once
    assert once(cfg)[0] == 1
    first = receiver.verified[0].json["data"]["attachments"][0]
    # Expiries are whole seconds (now + ttl): the replay's link is later once the wall clock
    # has passed the second the first one was minted in.
    minted = dt.datetime.fromisoformat(first["expires_at"]).timestamp() - 3600
    wait_until_sync(lambda: time.time() >= int(minted) + 1, 5, what="the next second")
    replay = subprocess.run(
        [sys.executable, "-m", "bridge", "dlq", "replay", "--all", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert replay.returncode == 0 and "replayed 1" in replay.stdout, replay.stderr
    before = time.time()
    assert once(cfg)[0] == 0
    (delivered,) = receiver.delivered
    again = delivered.json["data"]["attachments"][0]
    assert again["sha256"] == first["sha256"] == BIG.sha256
    assert again["url"] != first["url"]
    fresh = dt.datetime.fromisoformat(again["expires_at"]).timestamp()
    assert fresh > dt.datetime.fromisoformat(first["expires_at"]).timestamp()
    assert before - 5 + 3600 <= fresh <= time.time() + 3600
    # The fresh link is served (by whichever `run` shares the store; here one in this process).
    signer = LinkSigner("https://files.example.test/mail", [KEY.encode()])

    async def download() -> tuple[int, bytes]:
        store = open_store(f"sqlite:///{tmp_path / 's.db'}")
        async with LinkServer(store, signer, "127.0.0.1", 0) as server:
            parts = urllib.parse.urlsplit(again["url"])
            url = f"{server.url}{parts.path}?{parts.query}"
            async with aiohttp.ClientSession() as session, session.get(url) as r:
                result = r.status, await r.read()
        await store.close()
        return result

    status, body = asyncio.run(download())
    assert status == 200 and hashlib.sha256(body).hexdigest() == BIG.sha256

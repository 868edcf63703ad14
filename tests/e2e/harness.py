"""End-to-end harness: a signature-checking webhook receiver and config files for the CLI.

The receiver is a real aiohttp server; every request is verified with the `standardwebhooks`
reference library (never with our own signing code) and recorded with its `webhook-id`. It can
be told to fail the next N requests, and stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from standardwebhooks.webhooks import Webhook


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


@dataclass
class Received:
    msg_id: str
    body: dict[str, Any]
    status: int


@dataclass
class Receiver:
    """Runs in its own thread and event loop, so a test can block on subprocesses freely."""

    secret: str = field(default_factory=new_secret)
    port: int = 0
    fail_next: int = 0
    fail_status: int = 500
    received: list[Received] = field(default_factory=list)
    invalid: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    # -- what was received -------------------------------------------------------------------
    def delivered(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if 200 <= r.status < 300]

    def delivered_ids(self) -> Counter[str]:
        return Counter(r.msg_id for r in self.delivered())

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        assert ready.wait(10), "receiver did not start"

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    async def _start(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()

    async def _stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            Webhook(self.secret).verify(raw, dict(request.headers))
        except Exception:
            with self._lock:
                self.invalid += 1
            return web.Response(status=401)
        msg_id = request.headers["webhook-id"]
        with self._lock:
            status = 204
            if self.fail_next > 0:
                self.fail_next -= 1
                status = self.fail_status
            self.received.append(Received(msg_id, orjson.loads(raw), status))
        return web.Response(status=status)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A started `Receiver`, stopped after the test (import it where a test needs one)."""
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()


def write_config(
    path: Path,
    *,
    db: Path,
    receiver: Receiver,
    accounts: list[dict[str, Any]],
    poller: dict[str, Any] | None = None,
    webhook: dict[str, Any] | None = None,
) -> Path:
    config = {
        "state": {"url": f"sqlite:///{db}"},
        "webhooks": [
            {
                "name": "main",
                "url": receiver.url,
                "secret": receiver.secret,
                "timeout": 5,
                **(webhook or {}),
            }
        ],
        "accounts": accounts,
        "poller": {"jitter": 0.1, "shutdown_grace": 5, **(poller or {})},
        "ops": {"enabled": False},
        "logging": {"format": "json", "level": "INFO"},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def dovecot_account(dovecot: Any, user: Any, **extra: Any) -> dict[str, Any]:
    return {**dovecot.pop3s_account(user), "poll_interval": 1, **extra}

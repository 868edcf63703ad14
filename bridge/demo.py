"""`pop3bridge demo`: the whole bridge on one machine, with nothing to install or configure.

A built-in POP3 server (the test fake, in its well-behaved mode) holds a few sample messages, a
built-in webhook receiver prints each webhook it gets as one line after checking its Standard
Webhooks signature, and the real poller, store (SQLite in a temporary directory) and sender run
between them. A few seconds in, one more message is dropped into the mailbox to show new mail
arriving. The receiver checks signatures with its own few lines of HMAC rather than the
sender's code, so a signing bug would show up as "signature INVALID".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import signal
import tempfile
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson
from aiohttp import web

from bridge.delivery.worker import WebhookRoute
from bridge.lifecycle import Service
from bridge.outbox import DeferredPayload
from bridge.poller.app import PollerApp, PollerOptions
from bridge.poller.spec import AccountSpec
from bridge.store import open_store
from bridge.testing.fakepop3 import FakePOP3Server
from bridge.testing.samples import demo_messages, generate_messages

__all__ = ["DemoReceiver", "run_demo"]

NEW_MAIL_AFTER = 4.0
POLL_INTERVAL = 2.0


def _verify(secret: str, headers: Any, body: bytes) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    try:
        if abs(time.time() - int(stamp)) > 300:
            return False
    except ValueError:
        return False
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    expected = base64.b64encode(mac).decode()
    offered = [s.partition(",")[2] for s in headers.get("webhook-signature", "").split()]
    return any(hmac.compare_digest(expected, sig) for sig in offered)


class DemoReceiver(Service):
    """An aiohttp endpoint that prints one line per webhook (subject, from, id, signature)."""

    def __init__(self, secret: str, out: TextIO, payload_dir: str | None = None) -> None:
        self.secret = secret
        self.out = out
        # Each body is also written here as `<webhook-id>.json`, for the user to read while
        # the demo runs: a one-line summary does not show what a receiver gets.
        self.payload_dir = payload_dir
        super().__init__()
        self.received: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    # -- lifecycle (bridge.lifecycle.Service: start / ready / stop) ----------------------------
    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/webhook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/webhook"

    async def _stop(self, grace: float | None) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        ok = _verify(self.secret, request.headers, body)
        try:
            data = orjson.loads(body)["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            data = {}
        sender = (data.get("from") or [{}])[0] if isinstance(data.get("from"), list) else {}
        who = sender.get("address") or "?"
        if sender.get("name"):
            who = f"{sender['name']} <{who}>"
        webhook_id = request.headers.get("webhook-id")
        self.received.append({"id": webhook_id, "verified": ok, **data})
        saved = ""
        if self.payload_dir is not None and ok and webhook_id and webhook_id.isidentifier():
            path = os.path.join(self.payload_dir, f"{webhook_id}.json")
            pretty = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2)
            await asyncio.to_thread(_write, path, pretty)
            saved = f"\n         payload: {path}"
        self.out.write(
            f"webhook  subject={data.get('subject')!r}  from={who}  "
            f"webhook-id={webhook_id}  "
            f"signature {'verified' if ok else 'INVALID'}{saved}\n"
        )
        self.out.flush()
        return web.Response(status=204 if ok else 401)


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


PEEK_HINT = (
    "For a real mailbox: `pop3bridge peek --config FILE --account NAME --limit 3` prints the "
    "payloads it would send, without side effects."
)


async def run_demo(
    out: TextIO,
    duration: float | None = None,
    *,
    install_signals: bool = True,
    on_ready: Callable[[DemoReceiver, FakePOP3Server], None] | None = None,
    ops_port: int | None = 0,
) -> DemoReceiver:
    """Run the demo until `duration` seconds pass or SIGINT/SIGTERM; returns the receiver.

    `ops_port` serves the ops endpoint (health, metrics, status) on loopback, 0 meaning any free
    port; None leaves it off.
    """
    from bridge.delivery.policy import RetryPolicy
    from bridge.delivery.sender import WebhookSender, WebhookTarget
    from bridge.ops.logging import register_secret
    from bridge.ops.server import OpsServer
    from bridge.poller.observe import Observer

    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    password = secrets.token_urlsafe(12)
    register_secret(secret)
    register_secret(password)
    stop = asyncio.Event()
    if install_signals:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    with tempfile.TemporaryDirectory(prefix="pop3bridge-demo-") as tmp:
        db = os.path.join(tmp, "state.db")
        payload_dir = os.path.join(tmp, "payloads")
        os.mkdir(payload_dir)
        async with (
            FakePOP3Server(demo_messages(), user="demo", password=password) as pop,
            DemoReceiver(secret, out, payload_dir) as receiver,
            WebhookSender() as sender,
        ):
            store = open_store(f"sqlite:///{db}")
            await store.migrate()
            spec = AccountSpec(
                name="demo",
                host=pop.host,
                port=pop.port,
                tls="none",
                allow_plaintext=True,  # loopback only, to a server we started ourselves
                username="demo",
                password=password,
                webhook="demo",
                poll_interval=POLL_INTERVAL,
                connect_timeout=5.0,
                read_timeout=10.0,
            )
            target = WebhookTarget(
                name="demo", url=receiver.url, secrets=(secret,), timeout=5.0, headers={}
            )
            build = DeferredPayload(
                attachment_inline_limit=spec.fetch.attachment_inline_limit,
                include_raw=spec.fetch.include_raw,
            )
            routes = {"demo": WebhookRoute(target=target, policy=RetryPolicy(), prepare=build)}

            async def accounts() -> list[AccountSpec]:
                return [spec]

            observer = Observer(store)
            app = PollerApp(
                store,
                sender,
                routes,
                accounts,
                PollerOptions(jitter=0.1, shutdown_grace=3.0),
                on_poll=observer.on_poll,
                on_delivery=observer.on_delivery,
            )
            ops: OpsServer | None = None
            if ops_port is not None:
                ops = OpsServer(
                    "127.0.0.1",
                    ops_port,
                    readiness_checks=[observer.store_reachable],
                    status_provider=observer.status,
                    refreshers=[observer.refresh],
                )
                await ops.start()
            ops_line = (
                f"  ops endpoint    {ops.url}/  (also /status /metrics /healthz /readyz)\n"
                if ops is not None
                else ""
            )
            out.write(
                "pop3bridge demo\n"
                f"  POP3 server     pop3://demo@{pop.host}:{pop.port}  "
                f"({len(pop.mailbox)} sample messages)\n"
                f"  webhook receiver {receiver.url}  (checks Standard Webhooks signatures)\n"
                f"  state database  {db}\n"
                f"  payloads        {payload_dir}/  (each webhook's JSON body, as received; "
                "the folder is removed when the demo stops)\n"
                f"{ops_line}"
                f"  polling every {POLL_INTERVAL:.0f}s; one more message arrives in "
                f"{NEW_MAIL_AFTER:.0f}s. "
                + ("Ctrl-C stops.\n" if duration is None else f"Stops after {duration:g}s.\n")
                + f"{PEEK_HINT}\n"
            )
            out.flush()
            if on_ready is not None:
                on_ready(receiver, pop)
            task = asyncio.create_task(app.run(stop))
            try:
                await _wait(stop, NEW_MAIL_AFTER, duration)
                if not stop.is_set():
                    pop.mailbox.append(generate_messages(1, seed=int(time.time()))[0])
                    out.write("(a new message was dropped into the mailbox)\n")
                    out.flush()
                    remaining = None if duration is None else max(0.0, duration - NEW_MAIL_AFTER)
                    await _wait(stop, remaining, None)
            finally:
                stop.set()
                await task
                if ops is not None:
                    await ops.stop()
                await store.close()
            out.write(f"demo finished: {len(receiver.received)} webhooks received\n{PEEK_HINT}\n")
            out.flush()
    return receiver


async def _wait(stop: asyncio.Event, seconds: float | None, limit: float | None) -> None:
    if limit is not None and seconds is not None:
        seconds = min(seconds, limit)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()

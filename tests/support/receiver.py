"""A real, scriptable webhook receiver for tests: aiohttp on 127.0.0.1, verified by the reference.

Every request is checked with the `standardwebhooks` reference library (never with our own
signing code, so a bug there cannot hide itself), recorded, and answered from a script::

    async with WebhookReceiver(secrets=[secret]) as rx:          # or ssl_context=...
        rx.script(Reply(500), Reply(429, retry_after="3"), Reply(reset=True), Reply(delay=5))
        rx.fail_next(2, status=503)                               # shorthand, appended
        ...  # rx.url, rx.requests, rx.ids (Counter), rx.unique_ids, rx.duplicates, rx.invalid
        await rx.stop(); await rx.start()                         # same port ("receiver down")
        await rx.wait_for(10)                                     # 10 verified requests seen
        await rx.wait_quiet()              # no connection open: after the sender exited, final

Requests whose signature does not verify are recorded with `verified=False`, counted in
`rx.invalid`, answered 401, and do not consume the script: tests assert `rx.invalid == 0`.
Scripted replies are consumed in arrival order; when the script is empty the answer is
`default_status` (204).

It runs on the test's own event loop. For a test that blocks (subprocesses), run it in a thread
with `ThreadedReceiver`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from bridge.lifecycle import Service

__all__ = ["Received", "Reply", "ThreadedReceiver", "WebhookReceiver", "new_secret"]


def new_secret(nbytes: int = 32) -> str:
    return "whsec_" + base64.b64encode(os.urandom(nbytes)).decode()


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `reset` aborts the TCP connection with RST instead of answering;
    `delay` sleeps first (longer than the sender's timeout = a timeout test)."""

    status: int = 204
    retry_after: str | None = None
    delay: float = 0.0
    reset: bool = False
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any  # parsed body when verified, else None
    verified: bool
    status: int | None  # what we answered; None for a reset
    at: float  # time.time() on arrival

    @property
    def msg_id(self) -> str | None:
        return self.headers.get("webhook-id")


class WebhookReceiver(Service):
    def __init__(
        self,
        secrets: Sequence[str] | str | None = None,
        *,
        ssl_context: Any = None,
        port: int = 0,
        path: str = "/hook",
        default_status: int = 204,
    ) -> None:
        super().__init__()
        if secrets is None:
            secrets = [new_secret()]
        elif isinstance(secrets, str):
            secrets = [secrets]
        self.secrets = list(secrets)
        self._verifiers = [Webhook(s) for s in self.secrets]
        self.ssl_context = ssl_context
        self.port = port
        self.path = path
        self.default_status = default_status
        self.requests: list[Received] = []
        self.connections = 0  # TCP connections accepted (keep-alive reuse shows as few)
        self._script: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()

    # -- addresses ---------------------------------------------------------------------------
    @property
    def secret(self) -> str:
        return self.secrets[0]

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{self.path}"

    # -- scripting ---------------------------------------------------------------------------
    def script(self, *replies: Reply | int) -> None:
        """Append answers for the next requests (an int is shorthand for `Reply(status)`)."""
        for r in replies:
            self._script.append(Reply(r) if isinstance(r, int) else r)

    def fail_next(self, n: int, status: int = 500) -> None:
        self.script(*(Reply(status) for _ in range(n)))

    def clear_script(self) -> None:
        self._script.clear()

    # -- what was received -------------------------------------------------------------------
    @property
    def verified(self) -> list[Received]:
        return [r for r in self.requests if r.verified]

    @property
    def invalid(self) -> int:
        return sum(1 for r in self.requests if not r.verified)

    @property
    def delivered(self) -> list[Received]:
        """Verified requests we answered 2xx."""
        return [r for r in self.verified if r.status is not None and 200 <= r.status < 300]

    @property
    def delivered_ids(self) -> Counter[str]:
        """2xx answers per `webhook-id` (a count above 1 is a duplicate delivery)."""
        return Counter(r.msg_id for r in self.delivered if r.msg_id is not None)

    @property
    def ids(self) -> Counter[str]:
        """Verified requests per `webhook-id` (all answers, not just 2xx)."""
        return Counter(r.msg_id for r in self.verified if r.msg_id is not None)

    @property
    def unique_ids(self) -> set[str]:
        return set(self.ids)

    @property
    def duplicates(self) -> int:
        """Verified requests beyond the first per `webhook-id`."""
        return sum(n - 1 for n in self.ids.values())

    async def wait_for(self, count: int, timeout: float = 10.0, *, verified: bool = True) -> None:
        """Wait until `count` (verified) requests were recorded; TimeoutError otherwise."""

        def enough() -> bool:
            return len(self.verified if verified else self.requests) >= count

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(enough)

    @property
    def open_connections(self) -> int:
        """Client connections aiohttp holds open now (each may carry a request in progress)."""
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    async def wait_quiet(self, timeout: float = 10.0) -> None:
        """Wait until no client connection is open. After the sender's process has exited,
        that is the moment from which nothing more can arrive: every request it sent has
        been answered (and recorded) or cut. Proves "no stray request" without a sleep."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.open_connections:
            if loop.time() > deadline:
                raise AssertionError(f"{self.open_connections} connection(s) still open")
            await asyncio.sleep(0.01)

    # -- lifecycle (bridge.lifecycle.Service: start / ready / stop) --------------------------
    async def _start(self) -> None:
        """Listen (again) on `self.port`; the first start picks a free port."""
        if self.port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post(self.path, self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(
            runner, "127.0.0.1", self.port, ssl_context=self.ssl_context, reuse_address=True
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        # Count accepted connections through aiohttp's protocol factory.
        server = runner.server
        if server is not None:
            original = server.connection_made

            def counting(handler: Any, transport: Any) -> None:
                self.connections += 1
                original(handler, transport)

            server.connection_made = counting  # type: ignore[method-assign]

    async def _stop(self, grace: float | None) -> None:
        """Stop listening and drop open connections (in-flight requests are cut)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- the handler -------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        parsed: Any = None
        verified = False
        for verifier in self._verifiers:
            try:
                verifier.verify(raw, headers, json_parse=False)
            except Exception:  # any failure means "not this secret"
                continue
            verified = True
            parsed = orjson.loads(raw)
            break
        reply = self._script.popleft() if verified and self._script else Reply(self.default_status)
        if not verified:
            reply = Reply(401, body=b"invalid webhook signature")
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.reset:
            await self._record(Received(headers, raw, parsed, verified, None, time.time()))
            _reset(request)
            # Nothing can be sent on an aborted transport; end the handler quietly.
            raise asyncio.CancelledError
        await self._record(Received(headers, raw, parsed, verified, reply.status, time.time()))
        out = dict(reply.headers)
        if reply.retry_after is not None:
            out["Retry-After"] = reply.retry_after
        return web.Response(status=reply.status, body=reply.body, headers=out)

    async def _record(self, received: Received) -> None:
        async with self._changed:
            self.requests.append(received)
            self._changed.notify_all()


def _reset(request: web.Request) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 turns close() into an RST: the client sees "connection reset by peer".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class ThreadedReceiver:
    """`WebhookReceiver` on its own thread and loop, for tests that block (subprocesses).

    Methods are synchronous; attribute reads go to the inner receiver (lists are only appended
    to, so reading them from another thread is safe enough for assertions).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args
        self._kwargs = kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.receiver: WebhookReceiver | None = None

    def __getattr__(self, name: str) -> Any:
        receiver = self.__dict__.get("receiver")
        if receiver is None:
            raise AttributeError(name)
        return getattr(receiver, name)

    def __enter__(self) -> ThreadedReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self._loop is None:
            ready = threading.Event()
            self._loop = asyncio.new_event_loop()

            def run() -> None:
                assert self._loop is not None
                asyncio.set_event_loop(self._loop)
                self.receiver = WebhookReceiver(*self._args, **self._kwargs)
                ready.set()
                self._loop.run_forever()

            self._thread = threading.Thread(target=run, daemon=True, name="webhook-receiver")
            self._thread.start()
            assert ready.wait(10), "receiver thread did not start"
        self._call(self._inner().start())

    def stop(self) -> None:
        """Stop listening (same port on the next `start`)."""
        self._call(self._inner().stop())

    def script(self, *replies: Reply | int) -> None:
        inner = self._inner()

        async def apply() -> None:
            inner.script(*replies)

        self._call(apply())  # applied before we return: no race with the next request

    def fail_next(self, n: int, status: int = 500) -> None:
        self.script(*(Reply(status) for _ in range(n)))

    def clear_script(self) -> None:
        inner = self._inner()

        async def apply() -> None:
            inner.clear_script()

        self._call(apply())

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        self._call(self._inner().wait_for(count, timeout), timeout + 5)

    def wait_quiet(self, timeout: float = 10.0) -> None:
        self._call(self._inner().wait_quiet(timeout), timeout + 5)

    def close(self) -> None:
        if self._loop is None:
            return
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def _inner(self) -> WebhookReceiver:
        assert self.receiver is not None, "receiver not started"
        return self.receiver

    def _call(self, coro: Any, timeout: float = 15.0) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

"""The operations HTTP endpoint: /healthz, /readyz, /metrics, /status and a page at /.

It knows nothing about the poller or the proxy: they hand it readiness checks and a status
provider as plain async callables. A readiness check passes when it returns anything but
False; raising or taking longer than `check_timeout` fails it, so a hung database makes the
pod unready instead of hanging the kubelet's probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from bridge.lifecycle import Service
from bridge.ops import metrics
from bridge.ops.logging import redact, redact_value
from bridge.ops.page import render_page

__all__ = [
    "HTTPService",
    "MessageProvider",
    "OpsEndpointError",
    "OpsServer",
    "ReadinessCheck",
    "Refresher",
    "StatusProvider",
]

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[object]]
StatusProvider = Callable[[], Awaitable[dict[str, Any]]]
# Brings gauges read from elsewhere (the store's outbox depth) up to date before a scrape.
Refresher = Callable[[], Awaitable[object]]
# One message's custody trail document by its id (`msg_...`), None when unknown.
MessageProvider = Callable[[str], Awaitable[dict[str, Any] | None]]


class OpsEndpointError(OSError):
    """The endpoint cannot listen (port taken, address not local); the message says what to set."""


class HTTPService(Service):
    """An aiohttp application on one TCP port, on the lifecycle base: what every HTTP listener
    here (the ops endpoint, the attachment links) shares. Subclasses build `app()` and call
    `_listen()` from `_start()`, turning its `OSError` into their own error."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0) once started, else the configured one."""
        return self._bound_port if self._bound_port is not None else self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def app(self) -> web.Application:
        raise NotImplementedError

    async def _listen(self) -> None:
        """Serve `app()`; raises the `OSError` of a failed bind with nothing left set up."""
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self._runner = runner
        self._bound_port = int(sockets[0].getsockname()[1]) if sockets else self._port

    async def _stop(self, grace: float | None) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


def _check_name(check: ReadinessCheck) -> str:
    name = getattr(check, "__qualname__", None) or getattr(check, "__name__", None)
    return str(name or type(check).__name__)


class OpsServer(HTTPService):
    def __init__(
        self,
        host: str,
        port: int,
        readiness_checks: Sequence[ReadinessCheck] = (),
        status_provider: StatusProvider | None = None,
        *,
        registry: CollectorRegistry | None = None,
        check_timeout: float = 5.0,
        refreshers: Sequence[Refresher] = (),
        message_provider: MessageProvider | None = None,
    ) -> None:
        super().__init__(host, port)
        self.message_provider = message_provider
        self.readiness_checks = list(readiness_checks)
        self.status_provider = status_provider
        self.registry = registry if registry is not None else metrics.REGISTRY
        self.check_timeout = check_timeout
        self.refreshers = list(refreshers)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status)
        app.router.add_get("/", self._index)
        app.router.add_get("/v1/messages/{id}", self._message)
        return app

    # -- lifecycle (bridge.lifecycle.Service: start / ready / stop) ---------------------------
    async def _start(self) -> None:
        try:
            await self._listen()
        except OSError as exc:
            raise OpsEndpointError(
                exc.errno,
                f"ops endpoint cannot listen on {self.host}:{self._port} ({exc.strerror}); "
                "set ops.port, or ops.enabled: false",
            ) from None
        log.info("ops endpoint listening on %s", self.url)

    # -- handlers -----------------------------------------------------------------------------
    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _run_check(self, check: ReadinessCheck) -> tuple[bool, str | None]:
        try:
            result = await asyncio.wait_for(check(), self.check_timeout)
        except TimeoutError:
            return False, f"timed out after {self.check_timeout:g}s"
        except Exception as exc:
            return False, redact(f"{type(exc).__name__}: {exc}")
        if result is False:
            return False, "not ready"
        return True, None

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        """(ready, {check name: "ok" or why not})."""
        results = await asyncio.gather(*(self._run_check(c) for c in self.readiness_checks))
        report: dict[str, str] = {}
        for check, (ok, why) in zip(self.readiness_checks, results, strict=True):
            report[_check_name(check)] = "ok" if ok else (why or "not ready")
        return all(ok for ok, _ in results), report

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, report = await self.readiness()
        body = orjson.dumps({"ready": ready, "checks": report})
        return web.Response(
            body=body, status=200 if ready else 503, content_type="application/json"
        )

    async def _refresh(self) -> None:
        # A slow or broken store must not fail the scrape: the gauges keep their last values
        # (readiness reports the store), and the scrape still shows every counter.
        for refresh in self.refreshers:
            try:
                await asyncio.wait_for(refresh(), self.check_timeout)
            except Exception as exc:
                log.debug("metrics refresh %s failed: %s", _check_name(refresh), redact(str(exc)))

    async def _metrics(self, request: web.Request) -> web.Response:
        await self._refresh()
        payload = generate_latest(self.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _status_doc(self) -> dict[str, Any]:
        if self.status_provider is None:
            return {"accounts": {}}
        return await self.status_provider()

    async def _status(self, request: web.Request) -> web.Response:
        try:
            doc = await self._status_doc()
        except Exception as exc:
            log.warning("status provider failed: %s", exc)
            body = orjson.dumps({"error": redact(f"{type(exc).__name__}: {exc}")})
            return web.Response(body=body, status=500, content_type="application/json")
        # Errors in the document come from servers and libraries; scrub them like log lines.
        return web.Response(
            body=orjson.dumps(redact_value(doc), default=str, option=orjson.OPT_NON_STR_KEYS),
            content_type="application/json",
        )

    async def _message(self, request: web.Request) -> web.Response:
        """The custody trail of one message (`pop3bridge trace --json`): never a body or a
        secret; 404 when the id is unknown or its trail was purged."""
        msg_id = request.match_info["id"]
        doc = None
        if self.message_provider is not None and len(msg_id) <= 200:
            try:
                doc = await self.message_provider(msg_id)
            except Exception as exc:
                log.warning("custody trail lookup failed: %s", redact(str(exc)))
                body = orjson.dumps({"error": redact(f"{type(exc).__name__}: {exc}")})
                return web.Response(body=body, status=500, content_type="application/json")
        if doc is None:
            body = orjson.dumps({"error": "no custody trail for this id (unknown or purged)"})
            return web.Response(body=body, status=404, content_type="application/json")
        return web.Response(body=orjson.dumps(redact_value(doc)), content_type="application/json")

    async def _index(self, request: web.Request) -> web.Response:
        ready, checks = await self.readiness()
        try:
            doc = await self._status_doc()
            problem = None
        except Exception as exc:
            doc, problem = {"accounts": {}}, redact(f"{type(exc).__name__}: {exc}")
        page = render_page(doc, ready, checks, problem, now=time.time())
        return web.Response(text=page, content_type="text/html")

"""The poller seen from outside: metrics, the /status document and the ops HTTP server.

The scheduler and the worker report through two hooks (`on_poll`, `on_delivery`); this module
turns them into Prometheus metrics and a per-account status table, and hands the ops server
plain callables (the ops package never imports the poller). Everything here is best effort:
an error in observation is logged and never stops polling or delivery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from bridge.poller.session import PollReport
from bridge.poller.spec import AccountSpec
from bridge.pop3.errors import AuthenticationFailed, ConnectionLost, InsecureAuthRefused, TLSFailure
from bridge.store.base import OutboxItem

if TYPE_CHECKING:
    from bridge.poller.runtime import Runtime

__all__ = ["AccountState", "Observer", "login_failure_reason"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AccountState:
    last_poll_at: float | None = None
    last_success_at: float | None = None
    last_error: str | None = None
    last_new: int = 0
    consecutive_failures: int = 0


def login_failure_reason(exc: BaseException) -> str | None:
    """A metric label for failures that happen at or before login, else None."""
    if isinstance(exc, AuthenticationFailed):
        return "auth"
    if isinstance(exc, InsecureAuthRefused):
        return "insecure"
    if isinstance(exc, TLSFailure):
        return "tls"
    if isinstance(exc, ConnectionLost):
        return "connect"
    return None


def _metrics() -> Any:
    try:
        from bridge.ops import metrics
    except ImportError:  # pragma: no cover - a build without ops
        return None
    return metrics


def _safe(fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except Exception:
        log.debug("metric update failed", exc_info=True)


class Observer:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.accounts: dict[str, AccountState] = {}
        self.started_at = time.time()
        self.metrics = _metrics()

    # -- hooks --------------------------------------------------------------------------------
    def on_poll(
        self, spec: AccountSpec, report: PollReport | None, exc: BaseException | None
    ) -> None:
        state = self.accounts.setdefault(spec.name, AccountState())
        now = time.time()
        state.last_poll_at = now
        m = self.metrics
        if report is not None:
            state.last_success_at = now
            state.last_error = None
            state.last_new = report.recorded
            state.consecutive_failures = 0
            if m is not None:
                _safe(lambda: m.POLLS.labels(account=spec.name, outcome="ok").inc())
                _safe(lambda: m.POLL_DURATION.labels(account=spec.name).observe(report.duration))
                _safe(lambda: m.MESSAGES_FETCHED.labels(account=spec.name).inc(report.recorded))
                _safe(lambda: m.BYTES_FETCHED.labels(account=spec.name).inc(report.bytes_fetched))
        elif exc is not None:
            state.last_error = f"{type(exc).__name__}: {exc}"
            state.consecutive_failures += 1
            if m is not None:
                _safe(lambda: m.POLLS.labels(account=spec.name, outcome="error").inc())
                reason = login_failure_reason(exc)
                if reason is not None:
                    _safe(lambda: m.LOGIN_FAILURES.labels(account=spec.name, reason=reason).inc())

    def on_delivery(self, item: OutboxItem, outcome: str, result: Any) -> None:
        m = self.metrics
        if m is None:
            return
        status = getattr(result, "status", None)
        klass = f"{status // 100}xx" if isinstance(status, int) else "none"
        _safe(lambda: m.DELIVERIES.labels(outcome=outcome, status_class=klass).inc())
        latency = getattr(result, "latency", None)
        if isinstance(latency, int | float):
            _safe(lambda: m.DELIVERY_LATENCY.observe(latency))
        if outcome == "dead":
            _safe(lambda: m.DEAD_LETTERS.inc())

    # -- ops server ---------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        now = time.time()
        stats = {s.account: s for s in await self.runtime.store.account_stats(now)}
        names = sorted(set(self.accounts) | set(stats))
        out: dict[str, Any] = {}
        for name in names:
            entry = asdict(self.accounts.get(name, AccountState()))
            stat = stats.get(name)
            entry["pending"] = stat.pending if stat else 0
            entry["dead"] = stat.dead if stat else 0
            entry["oldest_pending_age"] = (
                now - stat.oldest_pending_at if stat and stat.oldest_pending_at else None
            )
            out[name] = entry
        m = self.metrics
        if m is not None:
            _safe(lambda: m.OUTBOX_DEPTH.set(sum(e["pending"] for e in out.values())))
            ages = [e["oldest_pending_age"] for e in out.values() if e["oldest_pending_age"]]
            _safe(lambda: m.OLDEST_PENDING_AGE.set(max(ages, default=0.0)))
        return {"started_at": self.started_at, "accounts": out}

    async def ready(self) -> bool:
        await self.runtime.store.pending_count()
        return True

    @asynccontextmanager
    async def serving(self, settings: Any) -> AsyncIterator[None]:
        ops = getattr(settings, "ops", None)
        if ops is None or not getattr(ops, "enabled", True):
            yield
            return
        from bridge.ops.server import OpsServer

        server = OpsServer(
            ops.host, int(ops.port), readiness_checks=[self.ready], status_provider=self.status
        )
        await server.start()
        try:
            yield
        finally:
            await server.stop()

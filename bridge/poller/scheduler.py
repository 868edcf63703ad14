"""Per-account poll loops: jittered intervals, backoff, bounded concurrency, leases.

Each account gets its own task, so one account failing (wrong password, server down, a hostile
message that trips a bug) only ever delays that account. A semaphore bounds how many POP3
sessions run at once across all accounts. Jitter spreads accounts with the same interval so a
thousand mailboxes do not log in in the same second.

Backoff after a failure doubles from the poll interval up to `MAX_BACKOFF`; a server that says
how long to wait (`[LOGIN-DELAY]`, RFC 2449 section 8.1.1, via the client's `retry_after`) is
obeyed, and `[IN-USE]` (another client holds the maildrop) backs off as a temporary failure.

With `leases` on (several replicas sharing PostgreSQL) an account is polled only while this
replica holds its lease; leases are taken in fair shares (`ceil(accounts / live replicas)`) and
renewed well before they expire, so a dead replica's accounts move on within one TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bridge.poller.session import PollReport, poll_account
from bridge.poller.spec import AccountSpec
from bridge.pop3.errors import TemporaryFailure
from bridge.store.base import Store

__all__ = ["LeaseOptions", "Scheduler", "backoff_delay", "jittered"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 3600.0
MIN_BACKOFF = 5.0
RECONCILE_EVERY = 30.0

AccountSource = Callable[[], Awaitable[list[AccountSpec]]]
ReportHook = Callable[[AccountSpec, PollReport | None, BaseException | None], None]


def jittered(interval: float, jitter: float, rng: random.Random | None = None) -> float:
    """`interval` spread by +-`jitter` (a fraction, 0.1 = 10 %), never below zero."""
    spread = rng.uniform(-jitter, jitter) if rng else random.uniform(-jitter, jitter)
    return max(0.0, interval * (1.0 + spread))


def backoff_delay(interval: float, failures: int, retry_after: float | None = None) -> float:
    """Delay before the next poll after `failures` consecutive failures (failures >= 1)."""
    base = max(MIN_BACKOFF, min(interval, MAX_BACKOFF))
    delay = min(MAX_BACKOFF, base * 2.0 ** min(failures - 1, 16))
    if retry_after is not None:
        delay = max(delay if failures > 1 else 0.0, retry_after)
    return delay


@dataclass(frozen=True, slots=True)
class LeaseOptions:
    holder: str
    ttl: float = 60.0


class Scheduler:
    def __init__(
        self,
        store: Store,
        accounts: AccountSource,
        *,
        max_concurrent: int = 10,
        jitter: float = 0.1,
        notify: Callable[[], None] | None = None,
        on_report: ReportHook | None = None,
        leases: LeaseOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.jitter = jitter
        self.notify = notify
        self.on_report = on_report
        self.leases = leases
        self.clock = clock
        self._sessions = asyncio.Semaphore(max(1, max_concurrent))
        self._stopping = False
        self._loops: dict[str, tuple[AccountSpec, asyncio.Task[None]]] = {}
        self._held: set[str] = set()
        self._polling: set[asyncio.Task[PollReport]] = set()

    # -- one-shot -----------------------------------------------------------------------------
    async def poll_all_once(self) -> list[tuple[AccountSpec, PollReport | BaseException]]:
        """Poll every enabled account once, bounded; errors are returned, not raised."""
        specs = [s for s in await self.accounts() if s.enabled]

        async def one(spec: AccountSpec) -> tuple[AccountSpec, PollReport | BaseException]:
            try:
                return spec, await self._poll(spec)
            except Exception as exc:
                return spec, exc

        return list(await asyncio.gather(*(one(s) for s in specs)))

    # -- continuous ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, grace: float = 10.0) -> None:
        """Poll until `stop`; sessions in progress then finish their current batch and QUIT.

        A session still running after `grace` seconds is cancelled, which drops its connection
        without QUIT (nothing changes on the server; recorded messages stay recorded).
        """
        lease_task: asyncio.Task[None] | None = None
        try:
            await self._reconcile()
            if self.leases is not None:
                lease_task = asyncio.create_task(self._keep_leases(stop))
            while not stop.is_set():
                await _sleep_or(stop, RECONCILE_EVERY)
                if not stop.is_set():
                    await self._reconcile()
        finally:
            self._stopping = True
            if self._polling:
                _, pending = await asyncio.wait(set(self._polling), timeout=grace)
                for session in pending:
                    session.cancel()
            for _, loop in self._loops.values():
                loop.cancel()
            tasks = [t for _, t in self._loops.values()]
            if lease_task is not None:
                lease_task.cancel()
                tasks.append(lease_task)
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loops.clear()
            if self.leases is not None:
                with contextlib.suppress(Exception):
                    await self.store.release_leases(self.leases.holder)

    async def _reconcile(self) -> None:
        """Start loops for new or changed accounts, stop loops for removed or disabled ones."""
        try:
            wanted = {s.name: s for s in await self.accounts() if s.enabled}
        except Exception as exc:
            log.error("cannot load the account list: %s", exc)
            return
        for name, (spec, task) in list(self._loops.items()):
            if wanted.get(name) != spec or task.done():
                task.cancel()
                del self._loops[name]
        for name, spec in wanted.items():
            if name not in self._loops:
                self._loops[name] = (spec, asyncio.create_task(self._loop(spec)))

    async def _loop(self, spec: AccountSpec) -> None:
        # The first poll comes soon but spread out, so a restart does not log in to every
        # account in the same instant.
        delay = random.uniform(0, min(spec.poll_interval, 5.0) * max(self.jitter, 0.1) * 2)
        failures = 0
        while not self._stopping:
            await asyncio.sleep(delay)
            if self._stopping:
                return
            if self.leases is not None and spec.name not in self._held:
                delay = min(spec.poll_interval, self.leases.ttl / 3)
                continue
            try:
                await self._poll(spec)
            except asyncio.CancelledError:
                raise
            except TemporaryFailure as exc:
                failures += 1
                delay = backoff_delay(spec.poll_interval, failures, exc.retry_after)
                log.warning(
                    "poll deferred by the server, next try in %.0fs: %s",
                    delay,
                    exc,
                    extra={"account": spec.name, "failures": failures},
                )
                continue
            except Exception as exc:
                failures += 1
                delay = backoff_delay(spec.poll_interval, failures)
                log.error(
                    "poll failed (%s), next try in %.0fs: %s",
                    type(exc).__name__,
                    delay,
                    exc,
                    extra={"account": spec.name, "failures": failures},
                )
                continue
            failures = 0
            delay = jittered(spec.poll_interval, self.jitter)

    async def _poll(self, spec: AccountSpec) -> PollReport:
        async with self._sessions:
            task = asyncio.create_task(
                poll_account(
                    spec,
                    self.store,
                    clock=self.clock,
                    notify=self.notify,
                    stopping=lambda: self._stopping,
                )
            )
            self._polling.add(task)
            try:
                report = await asyncio.shield(task)
            except asyncio.CancelledError:
                task.cancel()
                raise
            except BaseException as exc:
                self._report(spec, None, exc)
                raise
            finally:
                self._polling.discard(task)
        self._report(spec, report, None)
        if report.recorded or report.deleted or report.rekeyed:
            log.info(
                "polled: %d new recorded, %d deleted",
                report.recorded,
                report.deleted,
                extra={"account": spec.name, "duration": round(report.duration, 3)},
            )
        return report

    def _report(
        self, spec: AccountSpec, report: PollReport | None, exc: BaseException | None
    ) -> None:
        if self.on_report is not None:
            try:
                self.on_report(spec, report, exc)
            except Exception:
                log.exception("poll report hook failed")

    async def _keep_leases(self, stop: asyncio.Event) -> None:
        assert self.leases is not None
        holder, ttl = self.leases.holder, self.leases.ttl
        while not stop.is_set():
            try:
                now = self.clock()
                replicas = max(1, await self.store.heartbeat(holder, now, ttl))
                names = sorted(spec.name for spec, _ in self._loops.values())
                share = math.ceil(len(names) / replicas) if names else 0
                held = await self.store.acquire_leases(holder, names, ttl, now, share)
                if held != self._held:
                    log.info(
                        "holding %d of %d account leases (%d replicas)",
                        len(held),
                        len(names),
                        replicas,
                    )
                self._held = held
            except Exception as exc:
                # Without a fresh lease we must stop polling before it expires elsewhere.
                log.error("lease renewal failed: %s", exc)
                self._held = set()
            await _sleep_or(stop, ttl / 3)


async def _sleep_or(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()

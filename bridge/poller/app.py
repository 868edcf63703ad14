"""Wiring: settings -> store, sender, token providers, scheduler, worker, ops; and shutdown.

`PollerApp` is the running bridge. `once()` polls every account and delivers what is due, for
cron jobs and tests; `run(stop)` polls and delivers until `stop` is set, then shuts down in the
order that loses nothing: stop starting polls, let sessions in progress record what they fetched
and QUIT, give in-flight deliveries `shutdown_grace` seconds, then close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.delivery.worker import DEFAULT_CLAIM_SECONDS, DeliveryWorker, WebhookRoute
from bridge.poller.poll import PollReport
from bridge.poller.scheduler import LeaseHook, LeaseOptions, Scheduler
from bridge.poller.spec import AccountSpec
from bridge.records import record
from bridge.store.base import OutboxItem, Store

__all__ = ["OnceResult", "PollerApp", "PollerOptions"]

log = logging.getLogger(__name__)

CUSTODY_PURGE_EVERY = 3600.0

AccountSource = Callable[[], Awaitable[list[AccountSpec]]]


@record
class PollerOptions:
    max_concurrent_accounts: int = 20
    jitter: float = 0.1
    poll_tick: float = 1.0
    shutdown_grace: float = 10.0
    delivery_concurrency: int = 16
    claim_seconds: float = DEFAULT_CLAIM_SECONDS
    replica_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    leases: bool = False
    # A dead replica's accounts are free after one TTL and taken at the next heartbeat of the
    # others: 30 s + 10 s, inside the minute the issue allows.
    lease_ttl: float = 30.0
    lease_heartbeat: float | None = None  # default: lease_ttl / 3
    accounts_refresh: float = 30.0
    # `retention.custody`: trails of messages delivered longer ago than this are purged.
    custody_retention: float = 30 * 86400.0


@dataclass(slots=True)
class OnceResult:
    """What one `once` did: polls per account, and deliveries made IN THIS RUN by outcome
    (`delivered` 2xx, `retried` scheduled for a later attempt, `dead` dead-lettered), plus the
    rows still pending in the store afterwards (this run's retries and any others)."""

    reports: list[tuple[str, PollReport | BaseException]]
    delivered: int
    pending: int
    retried: int = 0
    dead: int = 0

    @property
    def failed_accounts(self) -> list[str]:
        return [name for name, r in self.reports if isinstance(r, BaseException)]

    @property
    def ok(self) -> bool:
        return not self.failed_accounts and self.pending == 0


PollHook = Callable[[AccountSpec, PollReport | None, BaseException | None], None]
DeliveryHook = Callable[[OutboxItem, str, Any], None]


class PollerApp:
    def __init__(
        self,
        store: Store,
        sender: Any,
        routes: Mapping[str, WebhookRoute],
        accounts: AccountSource,
        options: PollerOptions,
        *,
        on_poll: PollHook | None = None,
        on_delivery: DeliveryHook | None = None,
        on_leases: LeaseHook | None = None,
        open_sender: Callable[[], Awaitable[Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.options = options
        self.clock = clock
        # `sender` is None and this opens it (`DeliveryRuntime.defer_sender`): `once` opens it
        # only when there is something to deliver, so a run that finds nothing new never
        # imports aiohttp (60-75 ms of CPU, a fifth of an empty run's).
        self._open_sender = open_sender
        self._recorded = asyncio.Event()
        self.worker = DeliveryWorker(
            store,
            sender,
            routes,
            holder=options.replica_id,
            concurrency=options.delivery_concurrency,
            claim_seconds=options.claim_seconds,
            clock=clock,
            on_result=on_delivery,
        )
        self.scheduler = Scheduler(
            store,
            accounts,
            max_concurrent=options.max_concurrent_accounts,
            jitter=options.jitter,
            tick=options.poll_tick,
            notify=self.worker.notify if open_sender is None else self._notify,
            deliveries=self.worker.deliveries,
            on_report=on_poll,
            leases=(
                LeaseOptions(options.replica_id, options.lease_ttl, options.lease_heartbeat)
                if options.leases
                else None
            ),
            clock=clock,
            refresh=options.accounts_refresh,
            on_leases=on_leases,
        )

    async def once(self) -> OnceResult:
        """One poll of every account, delivering while polling; then whatever else is due."""
        stop = asyncio.Event()
        self.worker.outcomes = {}
        worker = asyncio.create_task(self._deliver(stop))
        try:
            results = await self.scheduler.poll_all_once()
        finally:
            stop.set()
            await worker
        if await self._sender_needed():
            await self.worker.deliver_due()
        self.worker.summary.flush()
        pending = await self.store.pending_count()
        tally = Counter(self.worker.outcomes.values())
        return OnceResult(
            [(s.name, r) for s, r in results],
            delivered=tally["delivered"],
            pending=pending,
            retried=tally["retry"],
            dead=tally["dead"],
        )

    def _notify(self) -> None:
        """A poll recorded new rows (the scheduler's `notify`, with a deferred sender)."""
        self._recorded.set()
        self.worker.notify()

    async def _sender_needed(self) -> bool:
        """Open the sender if rows wait in the outbox or a poll recorded some; False (and
        no sender) otherwise. No row is claimed before the sender and its routes exist: a
        claimed row whose webhook had no route yet would be dead-lettered."""
        if self._open_sender is None:
            return True
        if not self._recorded.is_set() and await self.store.next_due_at() is None:
            return False
        self.worker.sender = await self._open_sender()
        self._open_sender = None
        return True

    async def _deliver(self, stop: asyncio.Event) -> None:
        """`once`'s delivery worker: until `stop`, from the moment there is something to
        deliver (at once when the outbox holds rows, else when a poll records some)."""
        if not await self._sender_needed():
            recorded = asyncio.ensure_future(self._recorded.wait())
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({recorded, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                recorded.cancel()
                stopped.cancel()
            if not await self._sender_needed():
                return  # stopped with nothing to deliver
        await self.worker.run(stop, grace=self.options.shutdown_grace)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and deliver until `stop`; see the module docstring for the shutdown order."""
        worker_stop = asyncio.Event()
        worker = asyncio.create_task(
            self.worker.run(worker_stop, grace=self.options.shutdown_grace)
        )
        purger = asyncio.create_task(self._purge_custody(stop))
        try:
            await self.scheduler.run(stop, grace=self.options.shutdown_grace)
        finally:
            # Sessions are done (or were aborted): what they recorded can still go out.
            worker_stop.set()
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
            await worker

    async def _purge_custody(self, stop: asyncio.Event) -> None:
        """Forget custody trails past `retention.custody`: at start, then hourly. A failure is
        logged and tried again next time; it never stops polling or delivery."""
        while not stop.is_set():
            try:
                purged = await self.store.purge_custody(
                    self.clock() - self.options.custody_retention
                )
                if purged:
                    log.info("purged %d custody events past retention.custody", purged)
            except Exception as exc:
                log.warning("custody purge failed, will retry: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CUSTODY_PURGE_EVERY):
                    await stop.wait()

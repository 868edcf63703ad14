"""Per-account poll loops: jittered intervals, backoff, bounded concurrency, leases.

Each account gets its own task, so one account failing (wrong password, server down, a hostile
message that trips a bug) only ever delays that account. A semaphore bounds how many POP3
sessions run at once across all accounts. Jitter spreads accounts with the same interval so a
thousand mailboxes do not log in in the same second.

Polls land on a grid of `tick` seconds (`poller.poll_tick`, 1 s by default, never more than a
twentieth of the account's interval): each account's next poll is due at its interval, with
jitter, from the last one, then moved to the nearest tick, so an account is still polled every
`poll_interval` give or take half a tick. Polls that fall on the same tick start in the same
turn of the event loop and run side by side (up to the session limit), so their exchanges share
the loop's wake-ups and the server's; spread evenly instead, each exchange found both processes
asleep and woke them (BENCHMARKS.md §2: about a fifth of an idle poll's CPU).

Backoff after a failure doubles from the poll interval up to `MAX_BACKOFF`; a server that says
how long to wait (`[LOGIN-DELAY]`, RFC 2449 section 8.1.1, via the client's `retry_after`) is
obeyed, and `[IN-USE]` (another client holds the maildrop) backs off as a temporary failure.

With `leases` on (several replicas sharing PostgreSQL) an account is polled only while this
replica holds its lease. Every heartbeat (a third of the TTL by default) the replica announces
itself, renews what it holds and follows `sharing.plan`: take the free accounts that rendezvous
hashing gives it, hand back a few that belong to another replica (never one being polled), stay
within `ceil(M/N) + slack`. A lease counts as held only until `renewal start + ttl - margin` on
this process's monotonic clock: a replica that cannot renew (database down, event loop stalled)
stops using the lease before the row expires for the others, and a session in progress drops
its connection without QUIT (see `session.LeaseLost`). A dead replica's accounts are free after
at most one TTL and taken at the survivors' next heartbeat. See docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable

from bridge.delivery.worker import Deliveries
from bridge.poller import canary
from bridge.poller.oauth import OAuthGrantRevoked
from bridge.poller.poll import LeaseLost, SeenMemo, poll_account
from bridge.poller.report import PollReport
from bridge.poller.sharing import plan
from bridge.poller.spec import AccountSpec
from bridge.pop3.client import CapaMemo
from bridge.pop3.errors import TemporaryFailure
from bridge.records import record
from bridge.store.base import Store

__all__ = ["POLL_TICK", "LeaseOptions", "Scheduler", "backoff_delay", "jittered", "on_tick"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 3600.0
MIN_BACKOFF = 5.0
RECONCILE_EVERY = 30.0
# Polls are moved to the nearest multiple of this many seconds of the loop's clock (module
# docstring), and never by more than half of a twentieth of the interval.
POLL_TICK = 1.0

AccountSource = Callable[[], Awaitable[list[AccountSpec]]]
ReportHook = Callable[[AccountSpec, PollReport | None, BaseException | None], None]
# (leases held, live replicas or None when the heartbeat failed)
LeaseHook = Callable[[int, int | None], None]


def jittered(interval: float, jitter: float, rng: random.Random | None = None) -> float:
    """`interval` spread by +-`jitter` (a fraction, 0.1 = 10 %), never below zero."""
    spread = rng.uniform(-jitter, jitter) if rng else random.uniform(-jitter, jitter)
    return max(0.0, interval * (1.0 + spread))


def on_tick(delay: float, now: float, tick: float) -> float:
    """`delay` from `now`, moved so that it ends on the multiple of `tick` nearest to
    `now + delay` (never before `now`); `delay` itself when `tick` or `delay` is not positive."""
    if tick <= 0 or delay <= 0:
        return delay
    return max(0.0, round((now + delay) / tick) * tick - now)


def backoff_delay(interval: float, failures: int, retry_after: float | None = None) -> float:
    """Delay before the next poll after `failures` consecutive failures (failures >= 1)."""
    base = max(MIN_BACKOFF, min(interval, MAX_BACKOFF))
    delay = min(MAX_BACKOFF, base * 2.0 ** min(failures - 1, 16))
    if retry_after is not None:
        delay = max(delay if failures > 1 else 0.0, retry_after)
    return delay


@record
class LeaseOptions:
    """`heartbeat` defaults to ttl/3 (two renewals may fail before a lease is at risk);
    `margin` (default ttl/4) is how long before the row's expiry this replica stops using it."""

    holder: str
    ttl: float = 30.0
    heartbeat: float | None = None
    margin: float | None = None
    release_step: int = 4

    @property
    def interval(self) -> float:
        return self.heartbeat if self.heartbeat is not None else self.ttl / 3

    @property
    def safety(self) -> float:
        return self.margin if self.margin is not None else self.ttl / 4


class Scheduler:
    def __init__(
        self,
        store: Store,
        accounts: AccountSource,
        *,
        max_concurrent: int = 10,
        jitter: float = 0.1,
        notify: Callable[[], None] | None = None,
        deliveries: Deliveries | None = None,
        on_report: ReportHook | None = None,
        leases: LeaseOptions | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        refresh: float = RECONCILE_EVERY,
        on_leases: LeaseHook | None = None,
        tick: float = POLL_TICK,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.jitter = jitter
        self.notify = notify
        self.deliveries = deliveries
        self.on_report = on_report
        self.leases = leases
        self.clock = clock
        self.monotonic = monotonic
        self.refresh = refresh
        self.on_leases = on_leases
        self.tick = tick
        self._sessions = asyncio.Semaphore(max(1, max_concurrent))
        self._stopping = False
        self._loops: dict[str, tuple[AccountSpec, asyncio.Task[None]]] = {}
        # account -> monotonic time until which this replica may use its lease
        self._held: dict[str, float] = {}
        # Set while the account's lease is held: a loop without its lease sleeps on this instead
        # of waking up every few seconds (a replica knows every account, holds only its share).
        self._granted: dict[str, asyncio.Event] = {}
        self._names: list[str] = []  # enabled accounts, as of the last account-list refresh
        self._busy: set[str] = set()
        self._login_delay_noted: dict[str, float] = {}  # account -> LOGIN-DELAY logged
        # Accounts seen free at our last two heartbeats (see `sharing.plan`'s `free_before`).
        self._free_seen: collections.deque[set[str]] = collections.deque(maxlen=2)
        self._rounds = 0
        # Tasks running a session now (`_poll`): `run`'s shutdown gives them `grace` seconds.
        self._polling: set[asyncio.Task[object]] = set()
        self.canaries = canary.Tracker(clock)
        # Called once, right after `run` started the first account loops (before any poll):
        # `pop3bridge run` freezes the heap there (`bridge.commands._common.settled`).
        self.on_started: Callable[[], None] | None = None

    def owns(self, account: str) -> bool:
        """Whether this replica may poll `account` now (always, without leases)."""
        if self.leases is None:
            return True
        return self._held.get(account, -math.inf) > self.monotonic()

    @property
    def held(self) -> set[str]:
        """Accounts whose lease this replica may use right now."""
        now = self.monotonic()
        return {a for a, until in self._held.items() if until > now}

    # -- one-shot -----------------------------------------------------------------------------
    async def poll_all_once(self) -> list[tuple[AccountSpec, PollReport | BaseException]]:
        """Poll every enabled account once, bounded; errors are returned, not raised.

        With leases (a shared store), `once` takes the free leases first and skips, with a
        warning, accounts a running replica holds: a cron job must not race a replica's DELEs.
        """
        specs = [s for s in await self.accounts() if s.enabled]

        async def one(spec: AccountSpec) -> tuple[AccountSpec, PollReport | BaseException]:
            try:
                return spec, await self._poll(spec)
            except Exception as exc:
                # The same ERROR line `run` writes (without its retry delay): a cron job's
                # log must show the failure, not only the JSON summary on stdout.
                log.error(
                    "poll failed (%s): %s",
                    type(exc).__name__,
                    exc,
                    extra={"account": spec.name},
                )
                return spec, exc

        if self.leases is None:
            return list(await asyncio.gather(*(one(s) for s in specs)))
        opts = self.leases
        started = self.monotonic()
        got = await self.store.acquire_leases(
            opts.holder, [s.name for s in specs], opts.ttl, self.clock(), None
        )
        self._held = dict.fromkeys(got, started + opts.ttl - opts.safety)
        for spec in specs:
            if spec.name not in got:
                log.warning("skipped: held by another replica", extra={"account": spec.name})
        renewer = asyncio.create_task(self._renew_for_once())
        try:
            return list(await asyncio.gather(*(one(s) for s in specs if s.name in got)))
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            self._held.clear()
            with contextlib.suppress(Exception):
                await self.store.release_leases(opts.holder)

    async def _renew_for_once(self) -> None:
        assert self.leases is not None
        opts = self.leases
        while True:
            await asyncio.sleep(opts.interval)
            started = self.monotonic()
            try:
                renewed = await self.store.renew_leases(opts.holder, opts.ttl, self.clock())
            except Exception as exc:
                log.error("lease renewal failed: %s", exc)
                continue
            self._held = dict.fromkeys(renewed, started + opts.ttl - opts.safety)

    # -- continuous ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, grace: float = 10.0) -> None:
        """Poll until `stop`; sessions in progress then finish their current batch and QUIT.

        A session still running after `grace` seconds is cancelled, which drops its connection
        without QUIT (nothing changes on the server; recorded messages stay recorded).
        """
        lease_task: asyncio.Task[None] | None = None
        try:
            await self._reconcile()
            if self.on_started is not None:
                self.on_started()
            if self.leases is not None:
                lease_task = asyncio.create_task(self._keep_leases(stop))
            while not stop.is_set():
                await _sleep_or(stop, self.refresh)
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
                self._held.clear()
                with contextlib.suppress(Exception):
                    await self.store.release_leases(self.leases.holder)
                    # A zero TTL ends our membership now, so the others re-hash without us at
                    # their next heartbeat instead of one TTL later.
                    await self.store.heartbeat(self.leases.holder, self.clock(), 0)

    async def _reconcile(self) -> None:
        """Start loops for new or changed accounts, stop loops for removed or disabled ones."""
        try:
            wanted = {s.name: s for s in await self.accounts() if s.enabled}
        except Exception as exc:
            log.error("cannot load the account list: %s", exc)
            return
        self._names = sorted(wanted)
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
        # The account's seen set as this loop's polls left it (`poll.SeenMemo`): an idle poll
        # then skips the store. A changed account gets a new loop, and with it a new memo.
        memo = SeenMemo()
        # The CAPA list before login, kept from one session to the next (`CapaMemo`).
        capa = CapaMemo()
        tick = min(self.tick, spec.poll_interval / 20)
        loop = asyncio.get_running_loop()
        while not self._stopping:
            await asyncio.sleep(on_tick(delay, loop.time(), tick))
            if self._stopping:
                return
            if not self.owns(spec.name):
                assert self.leases is not None
                granted = self._granted.setdefault(spec.name, asyncio.Event())
                granted.clear()
                await granted.wait()
                # Spread the first logins after a takeover over one heartbeat.
                delay = random.uniform(0, min(spec.poll_interval, self.leases.interval))
                continue
            if spec.canary is not None:
                await self._send_canary(spec, spec.canary)
            try:
                report = await self._poll(spec, memo, capa)
            except asyncio.CancelledError:
                raise
            except LeaseLost as exc:
                log.warning("%s", exc, extra={"account": spec.name})
                delay = 0.0  # the loop now waits for the lease to come back
                continue
            except OAuthGrantRevoked as exc:
                if self._stopping:
                    return  # `run`'s shutdown waits for this task: no parking now
                # No backoff fixes a revoked grant, and asking the token endpoint again every
                # hour only adds noise: park until the account's settings change (`_reconcile`
                # then starts a new loop) or the process restarts.
                log.error(
                    "account needs re-authorisation; not polled until its OAuth settings "
                    "change: %s",
                    exc,
                    extra={"account": spec.name},
                )
                await self._parked()
                return
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
            delay = jittered(self._interval(spec, report), self.jitter)

    async def _send_canary(self, spec: AccountSpec, options: canary.CanaryOptions) -> None:
        """Submit a canary when one is due; a failure is recorded and never stops the poll."""
        now = self.clock()
        if spec.canary_key is None or not self.canaries.due(spec.name, options.every, now):
            return
        message, nonce = canary.canary_message(spec.name, spec.canary_key, options, now)
        try:
            await canary.submit(options, message, options.to or spec.username)
        except canary.CanaryError as exc:
            self.canaries.failed(spec.name, str(exc))
            log.warning("%s", exc, extra={"account": spec.name})
            return
        self.canaries.submitted(spec.name, nonce, now)
        log.debug("canary submitted", extra={"account": spec.name})

    def _interval(self, spec: AccountSpec, report: PollReport) -> float:
        """`poll_interval`, raised to the server's advertised LOGIN-DELAY when that is longer.

        RFC 2449 §6.5: a server announcing `LOGIN-DELAY n` refuses (or penalises) logins
        closer together than n seconds; polling faster only collects `[LOGIN-DELAY]` refusals
        and backoffs. Said once per account and value, not at every poll.
        """
        delay = report.login_delay
        if delay is None or delay <= spec.poll_interval:
            return spec.poll_interval
        if self._login_delay_noted.get(spec.name) != delay:
            self._login_delay_noted[spec.name] = delay
            log.warning(
                "poll_interval %gs is shorter than the server's LOGIN-DELAY of %gs; "
                "polling every %gs instead",
                spec.poll_interval,
                delay,
                delay,
                extra={
                    "account": spec.name,
                    "poll_interval": spec.poll_interval,
                    "login_delay": delay,
                },
            )
        return delay

    async def _parked(self) -> None:
        """Wait to be cancelled: `_reconcile` (the account changed) or `run`'s shutdown does."""
        await asyncio.Event().wait()

    async def _poll(
        self, spec: AccountSpec, memo: SeenMemo | None = None, capa: CapaMemo | None = None
    ) -> PollReport:
        async with self._sessions:
            # The loop saw the lease held, but waiting for a session slot can outlast it (a
            # heartbeat may hand the account on meanwhile: it is not busy yet). Checked here,
            # before the session is counted or logged, so "session start" lines mean a
            # session that may really open the mailbox.
            if self.leases is not None and not self.owns(spec.name):
                raise LeaseLost(spec.name)
            # The session runs in the caller's task (an account loop, or one of `once`'s),
            # which `run`'s shutdown waits for while it is listed here: a loop whose poll
            # ends then sees `_stopping` and returns. Cancelling that task drops the session
            # without QUIT, as cancelling a task of its own did (that cost a task, a shield
            # and a wake-up per poll).
            task = asyncio.current_task()
            assert task is not None
            self._polling.add(task)
            self._busy.add(spec.name)
            # Start/end of every session at DEBUG: with several replicas, these show (to the
            # millisecond) that two never had the same mailbox open at once. (Asked first, so
            # an idle poll at INFO builds no `extra` for a line nobody writes.)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("session start", extra={"account": spec.name})
            try:
                report = await poll_account(
                    spec,
                    self.store,
                    clock=self.clock,
                    notify=self.notify,
                    deliveries=self.deliveries,
                    stopping=lambda: self._stopping,
                    owned=None if self.leases is None else lambda: self.owns(spec.name),
                    memo=memo,
                    capa=capa,
                )
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self._report(spec, None, exc)
                raise
            finally:
                self._polling.discard(task)
                self._busy.discard(spec.name)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("session end", extra={"account": spec.name})
        for found, at in report.canaries:
            trip = self.canaries.fetched(spec.name, found, at)
            if trip is not None:
                log.info(
                    "canary fetched %.1fs after submission",
                    trip,
                    extra={"account": spec.name, "round_trip": round(trip, 3)},
                )
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
        while not stop.is_set():
            await self.lease_round()
            await _sleep_or(stop, self.leases.interval)

    async def lease_round(self) -> None:
        """One heartbeat: announce, renew, release and acquire per `sharing.plan`.

        The first round only announces this replica: replicas started together then see each
        other before anyone takes leases, instead of the first one grabbing everything and
        handing it back piece by piece.
        """
        assert self.leases is not None
        opts = self.leases
        holder = opts.holder
        started = self.monotonic()
        now = self.clock()
        try:
            await self.store.heartbeat(holder, now, opts.ttl)
            members = await self.store.live_replicas(now)
            holders = await self.store.lease_holders(now)
            names = self._names
            free = {a for a in names if a not in holders}
            first, self._rounds = self._rounds == 0, self._rounds + 1
            stale = set.intersection(*self._free_seen) if len(self._free_seen) == 2 else set()
            self._free_seen.append(free)
            if first:
                return
            steps = plan(
                holder,
                members,
                names,
                holders,
                busy=self._busy,
                free_before=stale,
                release_step=opts.release_step,
            )
            wanted = set(names)
            gone = [a for a, h in holders.items() if h == holder and a not in wanted]
            release = [*steps.release, *gone]
            # Stop using them before telling the others (no await in between since `plan`
            # read `_busy`, so no poll of these can have started).
            for account in release:
                self._held.pop(account, None)
            if release:
                await self.store.release_leases(holder, release)
            keep = [a for a in names if holders.get(a) == holder and a not in steps.release]
            got = await self.store.acquire_leases(
                holder, [*keep, *steps.acquire], opts.ttl, now, steps.cap
            )
        except Exception as exc:
            # What we hold stays usable until its monotonic deadline and no longer.
            log.error("lease renewal failed (leases still usable: %d): %s", len(self.held), exc)
            self._signal()
            self._lease_report(None)
            return
        until = started + opts.ttl - opts.safety
        before = set(self._held)
        self._held = {a: until for a in got if a in wanted}
        self._signal()
        self._lease_report(len(members))
        if set(self._held) != before:
            log.info(
                "holding %d of %d account leases (%d replicas, at most %d each)",
                len(self._held),
                len(names),
                len(members),
                steps.cap,
                extra={"replica": holder, "released": len(release)},
            )

    def _lease_report(self, replicas: int | None) -> None:
        if self.on_leases is not None:
            try:
                self.on_leases(len(self.held), replicas)
            except Exception:
                log.exception("lease report hook failed")

    def _signal(self) -> None:
        """Wake the loops of accounts whose lease is now held; the others wait."""
        held = self.held
        for account, event in self._granted.items():
            if account in held:
                event.set()
            else:
                event.clear()


async def _sleep_or(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()

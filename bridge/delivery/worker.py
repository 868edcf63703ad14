"""The delivery loop: outbox -> webhook, with the retry schedule kept in the store.

The worker owns no state a crash could lose. It claims due rows (a claim expires, so rows of a
worker that dies come back after `claim_seconds`), sends them concurrently through one pooled
sender, and ends every claim with exactly one of `mark_delivered` (2xx), `mark_retry` (the
policy's next time) or `mark_dead` (the policy gave up, or the row names a webhook that no longer
exists). Duplicates can therefore only come from the window between a 2xx and `mark_delivered`,
and they carry the same `webhook-id`, so receivers can drop them.

It lives in `delivery` because it is the one piece of delivery that keeps a schedule: it reads
and writes the store's outbox (delivery may import `store`, never the reverse) and reaches the
sender and the retry policy only through the small protocols below, so a test can drive it with
a scripted sender. The poller and the proxy's tap both run it; neither owns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any, Literal, Protocol

from bridge.delivery.summary import DeliverySummary
from bridge.records import record
from bridge.store.base import Attempt, OutboxItem, Store, needs_prepare
from bridge.store.errors import StoreError

__all__ = [
    "DEFAULT_CLAIM_SECONDS",
    "Deliveries",
    "DeliveryWorker",
    "Outcome",
    "RetrySchedule",
    "WebhookRoute",
]

log = logging.getLogger(__name__)

IDLE_WAIT = 5.0  # longest sleep with nothing due: bounds how late a missed wake-up is noticed
MIN_WAIT = 0.05
STORE_ERROR_BACKOFF = 1.0
# How long a claim lasts when the caller does not size it from its webhooks' timeouts.
DEFAULT_CLAIM_SECONDS = 120.0
# How long a delivered mark may wait for others to share its commit (`_GroupCommit`). A crash
# in that window re-sends the row (same webhook-id), as one between a 2xx and any commit did.
GROUP_LINGER = 0.005
# A claim is this many waves of sends (`concurrency` rows each); see `_Window` for what bounds
# how long a claimed row waits.
CLAIM_WAVES = 4
# At most this many claims out at once: the one being sent and the one made ahead.
CLAIMS_OUT = 2
# Rows let in to be sent within this many seconds of their claim are not renewed: their claim
# is as fresh as that of a round's first claim whose bodies took this long to build (which
# `claim_seconds`' margin, `bridge.runtime.CLAIM_MARGIN`, already allows for).
FRESH_CLAIM = 1.0


class Sender(Protocol):
    async def send(self, target: Any, msg_id: str, body: bytes) -> Any: ...


class RetrySchedule(Protocol):
    def next_attempt(self, attempts: int, result: Any, now: float) -> float | None: ...


@record
class WebhookRoute:
    """Where an outbox row's `webhook` name sends it, and how its failures are retried."""

    target: Any  # bridge.delivery.sender.WebhookTarget
    policy: RetrySchedule
    # Builds the body of a row recorded with a deferred payload (bridge.outbox.DeferredPayload),
    # and gives every other row its final shape (the webhook's format); called for every row.
    prepare: Callable[[OutboxItem], Awaitable[bytes]] | None = None


class Deliveries:
    """Wakes whoever waits for an account's next committed delivery.

    A delete-mode poll session waits on it for the messages it just recorded, so it can DELE
    them in the same session, instead of asking the store every few milliseconds. A count per
    account lets a waiter read the count, check the store, and then wait only if nothing was
    delivered in between (no wake-up is lost).
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._events: dict[str, asyncio.Event] = {}

    def count(self, account: str) -> int:
        return self._counts.get(account, 0)

    def delivered(self, account: str) -> None:
        """A delivery of `account` was committed to the store."""
        self._counts[account] = self._counts.get(account, 0) + 1
        event = self._events.pop(account, None)
        if event is not None:
            event.set()

    async def wait(self, account: str, count: int) -> None:
        """Return once `account`'s count is past `count` (at once if it already is)."""
        while self.count(account) == count:
            await self._events.setdefault(account, asyncio.Event()).wait()


Outcome = str  # "delivered" | "retry" | "dead"
ResultHook = Callable[[OutboxItem, Outcome, Any], None]


class DeliveryWorker:
    """`run(stop)` delivers until `stop` is set; `deliver_due()` delivers what is due now."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        routes: Mapping[str, WebhookRoute],
        *,
        holder: str,
        concurrency: int = 16,
        claim_seconds: float = DEFAULT_CLAIM_SECONDS,
        clock: Callable[[], float] = time.time,
        on_result: ResultHook | None = None,
        commit_linger: float = GROUP_LINGER,
    ) -> None:
        self.store = store
        self.sender = sender
        self.routes = routes
        self.holder = holder
        self.concurrency = max(1, concurrency)
        self.claim_seconds = claim_seconds
        self.clock = clock
        self.on_result = on_result
        # When a dict, the last outcome of every outbox row this worker handled (row id ->
        # outcome): `once` sets it to report each message once, by what finally happened to
        # it in the run (a row retried twice and then delivered is one delivery). None in
        # `run`, which would otherwise keep a key per message forever.
        self.outcomes: dict[int, Outcome] | None = None
        self.summary = DeliverySummary()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._window = _Window(self.concurrency * 2)
        self._delivered = _GroupCommit(store, linger=commit_linger)
        self.deliveries = Deliveries()

    def notify(self) -> None:
        """New rows were recorded: look for due work now instead of at the next timer."""
        self._wake.set()

    async def deliver_due(self) -> int:
        """Deliver everything due now (rounds until a claim comes back empty); returns count."""
        return await self._round()

    async def run(self, stop: asyncio.Event, grace: float = 10.0) -> None:
        """Deliver until `stop`; the round in flight then gets `grace` seconds to finish.

        Rows still unfinished after the grace period keep their claim until it expires,
        and are delivered after the restart with the same `webhook-id`.
        """
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                round_task = asyncio.ensure_future(self._round(stop))
                await asyncio.wait({round_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not round_task.done():
                    _, pending = await asyncio.wait({round_task}, timeout=grace)
                    if pending:
                        log.warning(
                            "shutdown grace period over with deliveries in flight; they will "
                            "be retried after restart",
                            extra={"grace": grace},
                        )
                        round_task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await round_task
                    break
                try:
                    done = round_task.result()
                except Exception as exc:
                    # The store is down or full: back off, the rows stay claimed or pending.
                    log.error(
                        "delivery round failed: %s", exc, exc_info=not isinstance(exc, StoreError)
                    )
                    await _sleep_or(stop, STORE_ERROR_BACKOFF)
                    continue
                if not done:
                    await self._idle(stop)
        finally:
            stopper.cancel()
            self.summary.flush()

    async def _idle(self, stop: asyncio.Event) -> None:
        self._wake.clear()
        self.summary.tick()
        wait = IDLE_WAIT
        try:
            due = await self.store.next_due_at()
        except StoreError as exc:
            log.error("cannot read the outbox schedule: %s", exc)
            due = None
        if due is not None:
            wait = min(IDLE_WAIT, max(MIN_WAIT, due - self.clock()))
        waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
        try:
            await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _round(self, stop: asyncio.Event | None = None) -> int:
        """Claim and deliver until a claim comes back empty (or `stop` is set); returns count.

        The next claim is made as soon as the current one's bodies are built, while its sends
        are still in flight: with a parse worker, the worker builds the next claim's bodies
        while this process posts the current one's (one claim at a time left each idle while
        the other worked). At most two claims are out at once: the one being sent and the
        one made ahead, whose rows are let into the send window (`_Window`) as it frees up,
        each group renewed on the way in (`_admit`).
        """
        total = 0
        claims: list[asyncio.Task[int]] = []
        admissions: list[_Admission] = []
        try:
            while stop is None or not stop.is_set():
                # Four waves of sends per claim: the window lets the next claim's rows in while
                # the current one's last wave is sent, and fewer, larger claims cost the store
                # less per row.
                claimed_at = self.clock()
                items = await self.store.claim_due(
                    claimed_at, self.concurrency * CLAIM_WAVES, self.holder, self.claim_seconds
                )
                if not items:
                    break
                built = _Countdown(item.id for item in items)
                admission = _Admission(items, admissions[-1] if admissions else None, claimed_at)
                admissions = [admission]
                claims.append(asyncio.ensure_future(self._claim(items, built, admission)))
                await built.wait_or(claims[-1])
                if len(claims) > CLAIMS_OUT - 1:  # the oldest finishes before the next claim
                    total += await claims.pop(0)
            while claims:
                total += await claims.pop(0)
        except asyncio.CancelledError:
            # The round is cancelled (run's grace is over): so is every claim it has out, the
            # one made ahead included, which would otherwise start its sends now.
            for claim in claims:
                claim.cancel()
            raise
        finally:
            if claims:
                # A claim failed (or this round is cancelled): the others finish their sends
                # and marks (or are cancelled with the round); unmarked rows keep their claim.
                await asyncio.gather(*claims, return_exceptions=True)
        return total

    async def _claim(
        self, items: list[OutboxItem], built: _Countdown, admission: _Admission
    ) -> int:
        """Deliver one claim's rows; `built` counts down as each row's body is ready. Returns
        how many rows it handled (not the ones it gave up unsent, below).

        Its bodies are built at once, but a row is sent only once `_admit` has let it into the
        send window: at once for the rows of a claim made with the window empty (the first
        of a round), otherwise in groups renewed (`renew_claims`) as the window frees up. A
        row whose claim was not renewed is not sent: its claim lapsed, and another claimer
        may hold it now (sending it would be the duplicate the claim exists to prevent); it
        is left to whoever claims it next.
        """
        ids = [item.id for item in items]
        admission.task = asyncio.ensure_future(self._admit(admission))
        try:
            results = await asyncio.gather(
                *(self._deliver(item, built, admission) for item in items),
                return_exceptions=True,
            )
        finally:
            admission.close()
            self._delivered.forgo(*ids)  # a delivery cancelled before it began
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            # Unmarked rows keep their claim until it expires, then are retried.
            raise failures[0]
        return sum(1 for r in results if r)

    async def _admit(self, admission: _Admission) -> None:
        """Let `admission`'s rows into the send window, in claim order, after the previous
        claim's rows (see `_Window` for why this keeps `claim_seconds`' bound).

        The rows of a claim made while the window is empty (the first of a round) enter at
        once as far as it has room: their claim was made just now. The others enter in groups
        of `concurrency` rows, each group once the window has room for it, and are renewed
        on the way in (only rows still claimed by this holder, pending and unexpired come
        back); the group commit expects their marks from then on.
        """
        try:
            await self._admit_rows(admission)
        except BaseException as exc:
            admission.fail(exc)
            raise

    async def _admit_rows(self, admission: _Admission) -> None:
        window = self._window
        ids = list(admission.futures)
        previous, admission.previous = admission.previous, None
        if previous is not None:
            await previous.settled()
        start = 0
        if previous is None and not window.busy():
            start = window.take(ids[: window.size])
            self._delivered.expect(ids[:start], admission)
            admission.resolve(ids[:start], set(ids[:start]))
        for at in range(start, len(ids), self.concurrency):
            group = ids[at : at + self.concurrency]
            await window.reserve(len(group))
            now = self.clock()
            if now - admission.claimed_at <= FRESH_CLAIM:
                # Claimed just now: as good as a renewal, like the first claim of a round
                # whose bodies took this long to build.
                renewed = set(group)
            else:
                try:
                    renewed = await self.store.renew_claims(
                        group, self.holder, now, self.claim_seconds
                    )
                except BaseException:
                    window.unreserve(len(group))
                    raise
            # Rows that ended while their group waited (a body that could not be built) or
            # were not renewed do not take a place.
            wanted = [i for i in group if i in renewed and admission.waiting(i)]
            window.place(len(group), wanted)
            self._delivered.expect(wanted, admission)
            admission.resolve(group, set(wanted))
            lost = len(group) - len(renewed)
            if lost:
                # Rows settled before the renewal (dead letters) count here too; at DEBUG only.
                log.debug("%d rows of a claim made ahead were not renewed", lost)

    async def _deliver(
        self,
        item: OutboxItem,
        built: _Countdown | None = None,
        admission: _Admission | None = None,
    ) -> bool:
        """Deliver `item` once; False when it was given up unsent (its claim not renewed)."""
        marking = False
        try:
            sent = await self._attempt(item, built, admission)
            if sent is None or sent is False:
                return sent is None
            marking = True
            await self._delivered.mark(item.id, sent.result.status, sent.at, sent.attempt)
        finally:
            if built is not None:
                built.settled(item.id)  # no-op once its body was counted
            if admission is not None:
                admission.ended(item.id)
            self._window.leave(item.id)  # no-op once its send ended
            if not marking:
                self._delivered.forgo(item.id)
        self.deliveries.delivered(item.account)
        self._report(item, "delivered", sent.result)
        return True

    async def _attempt(
        self,
        item: OutboxItem,
        built: _Countdown | None = None,
        admission: _Admission | None = None,
    ) -> _Sent | Literal[False] | None:
        """Send `item` once; a 2xx is returned for the caller to mark delivered. None: the
        attempt is settled here, the row marked for a retry or as dead (a failed answer, or
        none: no webhook, no body, a sender fault). False: not sent and not marked, because
        its claim was not renewed when it was let into the send window (`_admit`)."""
        route = self.routes.get(item.webhook)
        if route is None:
            # A webhook removed from the config: keep the row as a dead letter, replayable
            # once the webhook is back, rather than retrying forever or dropping it.
            error = f"no webhook named {item.webhook!r} is configured"
            await self.store.mark_dead(item.id, error, None, self.clock())
            log.error(error, extra={"msg_id": item.msg_id, "account": item.account})
            self._report(item, "dead", None)
            return None
        # The body is built before a request slot is taken: with parse workers, the whole
        # claim goes to them at once, and they parse the next bodies while this process
        # sends the finished ones (inside the slot, a worker waited for the sends of its
        # last batch before it got the next one).
        body = await self._body(item, route)
        if built is not None:
            built.settled(item.id)
        if body is None:
            return None
        if admission is not None and not await admission.admitted(item.id):
            return False
        # The slot covers the request only: the row is marked after it is released, so the
        # next send does not wait for this row's commit; and its place in the send window is
        # given back with the slot, so the next group is let in meanwhile.
        async with self._slots:
            try:
                result = await self.sender.send(route.target, item.msg_id, body)
            except Exception as exc:
                fault: Exception | None = exc
            else:
                fault = None
        self._window.leave(item.id)
        if fault is not None:
            # The sender reports every network and receiver outcome as a result, so an
            # exception is a fault that would recur on every attempt: dead-letter the
            # row with the reason (replayable once fixed) instead of looping on it.
            error = f"the delivery attempt failed ({type(fault).__name__}: {fault})"
            now = self.clock()
            failed = Attempt(item.msg_id, item.account, item.uidl, now, None, error, None, None)
            await self.store.mark_dead(item.id, error, None, now, failed)
            log.error(
                "delivery failed for good, dead-lettered: %s",
                error,
                extra={"msg_id": item.msg_id, "account": item.account},
            )
            self._report(item, "dead", None)
            return None
        now = self.clock()
        attempt = Attempt(
            item.msg_id,
            item.account,
            item.uidl,
            now,
            result.status,
            result.error,
            result.latency,
            getattr(result, "response_head", None),
        )
        if result.ok:
            return _Sent(result, now, attempt)
        error = result.error or f"HTTP {result.status}"
        when = route.policy.next_attempt(item.attempts + 1, result, now)
        extra = {
            "msg_id": item.msg_id,
            "account": item.account,
            "uidl": item.uidl,
            "webhook": item.webhook,
            "status": result.status,
            "attempt": item.attempts + 1,
        }
        if when is None:
            await self.store.mark_dead(item.id, error, result.status, now, attempt)
            log.error("delivery failed for good, dead-lettered: %s", error, extra=extra)
            self._report(item, "dead", result)
        else:
            await self.store.mark_retry(item.id, when, error, result.status, now, attempt)
            # No INFO line per failed attempt (successes have none either): the
            # summary counts it and carries the last error; DEBUG has the attempt.
            self._report(item, "retry", result, f"{error}; retry in {max(0.0, when - now):.1f}s")
        return None

    async def _body(self, item: OutboxItem, route: WebhookRoute) -> bytes | None:
        """The body to sign and send; None when it cannot be built (the row is then marked).

        A deferred row's body is built here from its raw message. Building never fails on any
        message bytes, so a failure is a bug or a missing builder, not a bad message: the row
        becomes a dead letter (kept with its raw message, replayable) instead of being retried
        in a loop.
        """
        if route.prepare is None and not needs_prepare(item.payload):
            return item.payload
        try:
            # A route's builder also reshapes bodies built at fetch (a delivery format).
            if route.prepare is None:
                raise LookupError(f"webhook {item.webhook!r} has no builder for deferred bodies")
            return await route.prepare(item)
        except Exception as exc:
            error = f"the webhook body could not be built ({type(exc).__name__}: {exc})"
            await self.store.mark_dead(item.id, error, None, self.clock())
            log.error(error, extra={"msg_id": item.msg_id, "account": item.account})
            self._report(item, "dead", None)
            return None

    def _report(
        self, item: OutboxItem, outcome: Outcome, result: Any, error: str | None = None
    ) -> None:
        if self.outcomes is not None:
            self.outcomes[item.id] = outcome
        latency = getattr(result, "latency", None)
        self.summary.attempt(
            outcome,
            account=item.account,
            uidl=item.uidl,
            msg_id=item.msg_id,
            webhook=item.webhook,
            status=getattr(result, "status", None),
            ms=None if latency is None else round(latency * 1000, 1),
            error=error or getattr(result, "error", None),
        )
        if self.on_result is not None:
            try:
                self.on_result(item, outcome, result)
            except Exception:  # metrics must never stop deliveries
                log.exception("delivery result hook failed")


class _Window:
    """The rows let in to be sent (`_admit`) whose sends have not ended: at most `size`,
    twice the worker's concurrency.

    What keeps `claim_seconds` (two waves of sends: `bridge.runtime.claim_seconds`) a bound on
    how long a claimed row waits: a row enters the window when its claim is made or renewed,
    and only when the window has room for it, so at that moment at most `size - 1` other rows
    are ahead of it. Request slots are taken in order (asyncio.Semaphore is FIFO), so once its
    body is built it waits for at most one wave of sends before its own starts, and its send
    ends within two send timeouts of its claim or renewal, as for a claim of `size` rows made
    with every slot free. Claims can then be larger than the window (`CLAIM_WAVES`): their
    other rows wait outside it, are renewed as they come in, and are not sent if that fails.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._placed: set[int] = set()
        self._reserved = 0
        self._waiters: list[asyncio.Future[None]] = []

    def busy(self) -> bool:
        return bool(self._placed or self._reserved)

    def free(self) -> int:
        return self.size - len(self._placed) - self._reserved

    def take(self, ids: list[int]) -> int:
        """Place as many of `ids` as there is room for, now; returns how many."""
        n = max(0, min(len(ids), self.free()))
        self._placed.update(ids[:n])
        return n

    async def reserve(self, n: int) -> None:
        """Wait until there is room for `n` rows (at most `size`) and hold it."""
        n = min(n, self.size)
        while self.free() < n:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        self._reserved += n

    def unreserve(self, n: int) -> None:
        self._reserved -= min(n, self.size)
        self._wake()

    def place(self, reserved: int, ids: list[int]) -> None:
        """Turn a reservation of `reserved` rows into the places of `ids` (some may be gone)."""
        self._reserved -= min(reserved, self.size)
        self._placed.update(ids)
        self._wake()

    def leave(self, item_id: int) -> None:
        """Row `item_id`'s send ended (or it ended unsent): its place is free. No-op after."""
        if item_id in self._placed:
            self._placed.discard(item_id)
            self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


class _Admission:
    """One claim's way into the send window (`DeliveryWorker._admit`): whether each of its
    rows was let in (renewed) or not, and when its admission has ended."""

    def __init__(
        self, items: list[OutboxItem], previous: _Admission | None, claimed_at: float
    ) -> None:
        loop = asyncio.get_running_loop()
        self.claimed_at = claimed_at
        # The previous claim's admission, until this one has waited for it (then None, so a
        # long round does not keep a chain of them).
        self.previous = previous
        self.task: asyncio.Task[None] | None = None
        self.futures: dict[int, asyncio.Future[bool]] = {
            item.id: loop.create_future() for item in items
        }
        self._ended: set[int] = set()

    def resolve(self, group: list[int], renewed: set[int]) -> None:
        """The rows of `group` were let in (those in `renewed`) or not (the others)."""
        for item_id in group:
            future = self.futures[item_id]
            if not future.done():
                future.set_result(item_id in renewed)

    def waiting(self, item_id: int) -> bool:
        """Row `item_id` has not ended: it still wants its place."""
        return item_id not in self._ended

    def ended(self, item_id: int) -> None:
        self._ended.add(item_id)

    async def admitted(self, item_id: int) -> bool:
        """Wait until row `item_id` was let in (True) or refused (False, its claim not renewed);
        raises what made the admission fail (`fail`)."""
        return await self.futures[item_id]

    def fail(self, exc: BaseException) -> None:
        """The admission ended before letting every row in: the rows still waiting get `exc`
        (cancelled with it when it was cancelled)."""
        for future in self.futures.values():
            if future.done():
                continue
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: rows that already ended never await it

    async def settled(self) -> None:
        """Wait until this claim's admission has ended (every row let in, or it failed)."""
        if self.task is not None:
            await asyncio.wait({self.task})

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            if self.task.done() and not self.task.cancelled():
                self.task.exception()  # retrieved: a failed renewal failed its rows


class _Countdown:
    """The rows of a claim whose bodies are not built yet (nor their attempt settled)."""

    def __init__(self, ids: Iterable[int]) -> None:
        self._left = set(ids)
        self._all: asyncio.Future[None] | None = None

    def settled(self, item_id: int) -> None:
        """Row `item_id`'s body is built, or its attempt ended without one."""
        self._left.discard(item_id)
        if not self._left and self._all is not None:
            _resolve(self._all)

    async def wait_or(self, claim: asyncio.Task[int]) -> None:
        """Return once every row is counted, or `claim` ended (done, failed or cancelled)."""
        if not self._left or claim.done():
            return
        every = self._all = asyncio.get_running_loop().create_future()
        claim.add_done_callback(lambda _: _resolve(every))
        await every


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@record
class _Sent:
    """One attempt answered with a 2xx, still to be marked delivered."""

    result: Any
    at: float
    attempt: Attempt


_NONE = object()


class _GroupCommit:
    """`mark_delivered` for deliveries that finish close together, in one transaction.

    A caller's `mark` returns only once its own row is committed (or raises what the commit
    raised), exactly like a `mark_delivered` of its own, so "marked before reported" still
    holds, and a row is marked only after its 2xx: a crash before the commit re-sends it.

    When to commit: the worker says which marks may still come (`expect` with the rows it
    let into the send window, by claim; each of them then gets `mark` or `forgo`). A commit
    starts when no other mark can come (every expected delivery finished), when every expected
    delivery of one claim has finished (the next claim's sends need not end first), when
    `max_group` marks wait, or
    `linger` seconds after the first waiting mark (a slow receiver must not hold the others'
    commits for its whole timeout). One commit runs at a time; marks that arrive meanwhile
    wait for the next. A claim of 64 rows is then a few commits rather than one per delivery
    that finished alone: commits are most of the store's work per delivered message.
    """

    def __init__(self, store: Store, *, max_group: int = 256, linger: float = GROUP_LINGER) -> None:
        self.store = store
        self.max_group = max_group
        self.linger = linger
        self._queued: list[tuple[int, int, float, Attempt | None, asyncio.Future[None]]] = []
        # Per claim (`expect`'s key), its expected rows not yet marked or forgone; each such
        # row's claim (so its keys are every mark that may still come); and whether a claim's
        # last one was, since the last commit started.
        self._claims: dict[object, set[int]] = {}
        self._claim_of: dict[int, object] = {}
        self._claim_ended = False
        self._committing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def expect(self, item_ids: Collection[int], claim: object = None) -> None:
        """These rows (of `claim`) are being delivered, each to end in `mark` or `forgo`."""
        self._claims.setdefault(claim, set()).update(item_ids)
        for item_id in item_ids:
            self._claim_of[item_id] = claim

    def _settle(self, item_id: int) -> None:
        claim = self._claim_of.pop(item_id, _NONE)
        if claim is not _NONE:
            rows = self._claims[claim]
            rows.discard(item_id)
            if not rows:
                del self._claims[claim]
                self._claim_ended = True

    def forgo(self, *item_ids: int) -> None:
        """These rows ended without a delivered mark (a no-op for rows already settled)."""
        for item_id in item_ids:
            self._settle(item_id)
        self._consider()

    async def mark(
        self, item_id: int, status: int, now: float, attempt: Attempt | None = None
    ) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settle(item_id)
        self._queued.append((item_id, status, now, attempt, done))
        self._consider()
        await done

    def _full(self) -> bool:
        return self._claim_ended or not self._claim_of or len(self._queued) >= self.max_group

    def _consider(self, *, now: bool = False) -> None:
        """Start a commit if one is due; otherwise make sure the linger timer runs."""
        if self._committing is not None:
            return
        if not self._queued:
            self._claim_ended = False  # a claim that ended with nothing to mark
            return
        if now or self._full():
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._claim_ended = False
            self._committing = asyncio.ensure_future(self._commit_all())
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger, self._lingered)

    def _lingered(self) -> None:
        self._timer = None
        self._consider(now=True)

    async def _commit_all(self) -> None:
        try:
            while True:
                group, self._queued = self._queued, []
                self._claim_ended = False
                try:
                    # The latest finish time stands for the group: they differ by a commit.
                    await self.store.mark_delivered_many(
                        [(item_id, status) for item_id, status, *_ in group],
                        max(now for _, _, now, *_ in group),
                        [a for *_, a, _ in group if a is not None],
                    )
                except BaseException as exc:
                    for *_, done in group:
                        if not done.done():
                            done.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for *_, done in group:
                        if not done.done():
                            done.set_result(None)
                # Marks that came during the commit: at once if nothing else is coming.
                if not (self._queued and self._full()):
                    break
        except BaseException:
            for *_, done in self._queued:  # cancelled mid-commit: the rest stay claimed
                if not done.done():
                    done.cancel()
            self._queued = []
            raise
        finally:
            self._committing = None
        self._consider()


async def _sleep_or(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()

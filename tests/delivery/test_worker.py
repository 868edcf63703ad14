"""The delivery loop against a real SQLite store, with a scripted sender (the real sender and
receiver are exercised end to end in tests/e2e)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge.delivery.worker import IDLE_WAIT, DeliveryWorker, WebhookRoute
from bridge.store import NewMessage, OutboxItem, Store, StoreError


@dataclass(frozen=True)
class Result:
    ok: bool
    status: int | None
    error: str | None = None
    retry_after: float | None = None
    permanent: bool = False
    latency: float = 0.0


@dataclass
class ScriptedSender:
    """Answers per msg_id from `script` (list consumed in order), 200 when it runs out."""

    script: dict[str, list[int | None]] = field(default_factory=dict)
    calls: list[tuple[str, str, bytes]] = field(default_factory=list)
    delay: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    started: int = 0  # sends begun
    # Set whenever a send begins or ends (tests wait on progress, never on the clock).
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            self.progress.clear()
            await self.progress.wait()

    async def send(self, target: object, msg_id: str, body: bytes) -> Result:
        self.in_flight += 1
        self.started += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.progress.set()
        try:
            if self.delay:
                await asyncio.sleep(self.delay)  # the stimulus: a slow receiver
            self.calls.append((str(target), msg_id, body))
            status = self.script.get(msg_id, []).pop(0) if self.script.get(msg_id) else 200
            if status is None:
                return Result(False, None, "connection refused")
            return Result(200 <= status < 300, status, None if status < 300 else f"HTTP {status}")
        finally:
            self.in_flight -= 1
            self.progress.set()


@dataclass
class FakeClock:
    now: float

    def __call__(self) -> float:
        return self.now


class QuickRetries:
    """Retry soon, give up after 3 attempts or on a 4xx."""

    def next_attempt(self, attempts: int, result: Result, now: float) -> float | None:
        if attempts >= 3 or (result.status is not None and 400 <= result.status < 500):
            return None
        return now + 0.01


def msgs(n: int, webhook: str = "main") -> list[NewMessage]:
    return [
        NewMessage(
            account="a",
            uidl=f"u{i}",
            msg_id=f"msg_{i:032x}",
            webhook=webhook,
            size=1,
            fingerprint=f"fp{i}",
            payload=b'{"n":%d}' % i,
            raw=b"x",
            delete_after_delivery=False,
        )
        for i in range(n)
    ]


def worker(store: Store, sender: ScriptedSender, **kw: object) -> DeliveryWorker:
    routes = {"main": WebhookRoute(target="main-target", policy=QuickRetries())}
    return DeliveryWorker(store, sender, routes, holder="t", claim_seconds=30, **kw)  # type: ignore[arg-type]


async def test_everything_due_is_delivered_once_with_bounded_concurrency(store: Store) -> None:
    await store.record(msgs(50), time.time())
    sender = ScriptedSender(delay=0.005)
    outcomes: list[str] = []
    w = worker(store, sender, concurrency=4, on_result=lambda i, o, r: outcomes.append(o))
    assert await w.deliver_due() == 50
    assert sorted(c[1] for c in sender.calls) == sorted(m.msg_id for m in msgs(50))
    assert {c[0] for c in sender.calls} == {"main-target"}
    assert sender.max_in_flight <= 4
    assert outcomes == ["delivered"] * 50
    assert await store.pending_count() == 0
    assert await w.deliver_due() == 0


async def test_failures_are_retried_then_dead_lettered(store: Store) -> None:
    m = msgs(3)
    await store.record(m, time.time())
    sender = ScriptedSender(
        script={
            m[0].msg_id: [500, 503],  # two failures then success
            m[1].msg_id: [500, 500, 500],  # gives up after 3 attempts
            m[2].msg_id: [410],  # permanent at once
        }
    )
    clock = FakeClock(time.time())
    w = worker(store, sender, clock=clock)
    for _ in range(20):
        await w.deliver_due()
        if await store.pending_count() == 0:
            break
        clock.now += 1  # past every retry the policy scheduled (10 ms ahead)
    dead = {d.msg_id: d for d in await store.dead_letters()}
    assert set(dead) == {m[1].msg_id, m[2].msg_id}
    assert dead[m[1].msg_id].attempts == 3 and dead[m[1].msg_id].last_status == 500
    assert dead[m[2].msg_id].attempts == 1 and dead[m[2].msg_id].last_status == 410
    calls = [c[1] for c in sender.calls]
    assert calls.count(m[0].msg_id) == 3
    # every attempt carried the same body (so the same webhook-id and signature input)
    assert {c[2] for c in sender.calls if c[1] == m[0].msg_id} == {m[0].payload}


async def test_unknown_webhook_is_dead_lettered_not_dropped(store: Store) -> None:
    await store.record(msgs(1, webhook="gone"), time.time())
    sender = ScriptedSender()
    await worker(store, sender).deliver_due()
    assert sender.calls == []
    [dead] = await store.dead_letters()
    assert "gone" in (dead.last_error or "")
    assert await store.replay(None, time.time()) == 1


async def test_run_wakes_on_notify_and_stops_cleanly(store: Store) -> None:
    sender = ScriptedSender()
    w = worker(store, sender)
    idle = asyncio.Event()
    real_claim = store.claim_due

    async def claim_due(*args: Any) -> list[OutboxItem]:
        items = await real_claim(*args)
        if not items:
            idle.set()  # the worker found nothing and goes to sleep for up to IDLE_WAIT
        return items

    store.claim_due = claim_due  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop, grace=1))
    await asyncio.wait_for(idle.wait(), 5)
    await store.record(msgs(5), time.time())
    w.notify()
    # Well before the idle timer would have woken it: notify did.
    await asyncio.wait_for(sender.until(lambda: len(sender.calls) == 5), IDLE_WAIT / 2)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_shutdown_waits_for_in_flight_sends_within_grace(store: Store) -> None:
    await store.record(msgs(3), time.time())
    sender = ScriptedSender(delay=0.3)
    w = worker(store, sender)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop, grace=5))
    await asyncio.wait_for(sender.until(lambda: sender.started == 3), 5)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert await store.pending_count() == 0  # the round in flight finished and was marked


async def test_deliveries_finishing_together_share_a_commit(store: Store) -> None:
    """Group commit: fewer transactions than deliveries, and each delivery is committed before
    it is reported delivered."""
    await store.record(msgs(40), time.time())
    groups = counting_marks(store)
    reported: list[int] = []

    def on_result(item: object, outcome: str, result: object) -> None:
        # Reported only after the row left the outbox's pending set for good.
        reported.append(item.id)  # type: ignore[attr-defined]
        assert sum(groups) >= len(reported)

    w = worker(store, ScriptedSender(), concurrency=8, on_result=on_result)
    assert await w.deliver_due() == 40
    assert sum(groups) == 40 and len(groups) < 40
    assert await store.pending_count() == 0


async def test_a_failed_group_commit_fails_each_delivery_in_it(store: Store) -> None:
    await store.record(msgs(6), time.time())

    async def broken(marks: list[tuple[int, int]], now: float, attempts: object = ()) -> None:
        raise StoreError("disk on fire")

    store.mark_delivered_many = broken  # type: ignore[assignment,method-assign]
    outcomes: list[str] = []
    w = worker(store, ScriptedSender(), concurrency=3, on_result=lambda i, o, r: outcomes.append(o))
    with pytest.raises(StoreError):
        await w.deliver_due()
    assert outcomes == []  # nothing reported delivered
    # The rows stay claimed, then come back when the claim (30 s here) runs out.
    assert await store.pending_count() == 6
    assert await store.claim_due(time.time() + 1, 10, "other", 30) == []
    assert len(await store.claim_due(time.time() + 31, 10, "other", 30)) == 6


@dataclass
class HeldSender(ScriptedSender):
    """Like ScriptedSender, but the sends of the msg_ids in `held` wait until `answer(id)`."""

    held: dict[str, asyncio.Event] = field(default_factory=dict)
    waiting: int = 0

    @classmethod
    def holding(cls, msg_ids: list[str]) -> HeldSender:
        return cls(held={i: asyncio.Event() for i in msg_ids})

    def answer(self, msg_id: str) -> None:
        self.held[msg_id].set()

    async def send(self, target: object, msg_id: str, body: bytes) -> Result:
        gate = self.held.get(msg_id)
        if gate is not None:
            self.waiting += 1
            self.progress.set()
            try:
                await gate.wait()
            finally:
                self.waiting -= 1
        return await super().send(target, msg_id, body)


def counting_marks(store: Store) -> list[int]:
    """The size of each group of delivered marks `store` commits from now on."""
    groups: list[int] = []
    real = store.mark_delivered_many

    async def counting(marks: list[tuple[int, int]], now: float, attempts: object = ()) -> None:
        groups.append(len(marks))
        await real(marks, now, attempts)  # type: ignore[arg-type]

    store.mark_delivered_many = counting  # type: ignore[assignment,method-assign]
    return groups


async def test_a_claim_commits_its_deliveries_together(store: Store) -> None:
    """The marks of one claim wait for each other (up to the linger): sends answered one by
    one, each well after the previous commit could have run, still share one commit."""
    m = msgs(8)
    await store.record(m, time.time())
    groups = counting_marks(store)
    sender = HeldSender.holding([x.msg_id for x in m])
    w = worker(store, sender, concurrency=8, commit_linger=60)
    task = asyncio.ensure_future(w.deliver_due())
    await asyncio.wait_for(sender.until(lambda: sender.waiting == 8), 5)
    for n, x in enumerate(m, 1):  # answer one send at a time, a commit's time apart
        sender.answer(x.msg_id)
        await asyncio.wait_for(sender.until(lambda n=n: len(sender.calls) == n), 5)  # type: ignore[misc]
        await asyncio.sleep(0.02)
    assert await asyncio.wait_for(task, 5) == 8
    assert groups == [8]
    assert await store.pending_count() == 0


async def polled(done: Callable[[], bool]) -> None:
    while not done():
        await asyncio.sleep(0.01)


def counting_claims(store: Store) -> list[int]:
    """The size of each claim `store` hands out from now on."""
    sizes: list[int] = []
    real = store.claim_due

    async def claim_due(*args: Any, **kwargs: Any) -> list[OutboxItem]:
        items = await real(*args, **kwargs)
        sizes.append(len(items))
        return items

    store.claim_due = claim_due  # type: ignore[method-assign]
    return sizes


async def test_the_next_claim_is_made_while_the_current_one_is_sent(store: Store) -> None:
    """Once a claim's bodies are built, the next claim is made (and its bodies built, by a
    parse worker when there is one) while the first claim's sends are still in flight; never
    more than two claims at once."""
    m = msgs(24)
    await store.record(m, time.time())
    claims = counting_claims(store)
    sender = HeldSender.holding([x.msg_id for x in m])
    w = worker(store, sender, concurrency=2)  # claims of 8
    task = asyncio.ensure_future(w.deliver_due())
    await asyncio.wait_for(sender.until(lambda: sender.waiting == 2), 5)
    await asyncio.wait_for(polled(lambda: len(claims) == 2), 5)
    await asyncio.sleep(0.05)  # a third claim would come now
    # Two claims of eight are out while the first claim's sends wait; the last eight are not.
    assert claims == [8, 8] and sender.waiting == 2
    for x in m:
        sender.answer(x.msg_id)
    assert await asyncio.wait_for(task, 5) == 24
    assert claims == [8, 8, 8, 0] and await store.pending_count() == 0


async def test_the_next_claim_s_rows_are_sent_while_a_slow_send_holds_a_slot(store: Store) -> None:
    """One send that hangs holds one request slot and one place in the send window, not the
    next claim: the other rows, the next claim's included, go out through the other slot.
    (Before the send window, the claim made ahead waited for the whole current claim to end.)"""
    m = msgs(16)
    await store.record(m, time.time())
    claims = counting_claims(store)
    sender = HeldSender.holding([m[0].msg_id])
    w = worker(store, sender, concurrency=2)  # claims of 8, a window of 4
    task = asyncio.ensure_future(w.deliver_due())
    await asyncio.wait_for(sender.until(lambda: len(sender.calls) == 15), 5)
    assert sender.waiting == 1 and claims == [8, 8]
    assert sorted(c[1] for c in sender.calls) == sorted(x.msg_id for x in m[1:])
    sender.answer(m[0].msg_id)
    assert await asyncio.wait_for(task, 5) == 16
    assert await store.pending_count() == 0


async def test_rows_enter_the_send_window_only_with_room_for_two_waves(store: Store) -> None:
    """What keeps `claim_seconds` a bound: a row is let in to be sent (its claim made or
    renewed) only while at most twice the concurrency rows, itself included, are let in and
    not yet sent, so at most one wave of sends is ahead of it. Every claim here is old by the
    time its rows are let in, so each group is renewed on the way in, and counted there."""
    clock = FakeClock(time.time())
    m = msgs(40)
    await store.record(m, clock.now)
    real_claim, real_renew = store.claim_due, store.renew_claims
    let_in = 4  # the first claim's rows let in at once: as many as the window holds
    ended = 0
    seen: list[tuple[int, int]] = []  # (let in and not yet sent, group) at each renewal

    async def claim_due(*args: Any, **kwargs: Any) -> list[OutboxItem]:
        items = await real_claim(*args, **kwargs)
        clock.now += 2  # older than a claim that needs no renewal, still far from lapsing
        return items

    async def renew_claims(ids: Any, *args: Any, **kwargs: Any) -> set[int]:
        nonlocal let_in
        seen.append((let_in - ended, len(ids)))
        renewed = await real_renew(ids, *args, **kwargs)
        let_in += len(renewed)
        return renewed

    store.claim_due = claim_due  # type: ignore[method-assign]
    store.renew_claims = renew_claims  # type: ignore[method-assign]
    sender = ScriptedSender(delay=0.002)
    real_send = sender.send

    async def send(target: object, msg_id: str, body: bytes) -> Result:
        nonlocal ended
        try:
            return await real_send(target, msg_id, body)
        finally:
            ended += 1

    sender.send = send  # type: ignore[method-assign]
    w = worker(store, sender, concurrency=2, clock=clock)  # claims of 8, a window of 4
    assert await asyncio.wait_for(w.deliver_due(), 10) == 40
    assert sorted(c[1] for c in sender.calls) == sorted(x.msg_id for x in m)
    assert sum(group for _, group in seen) == 36  # all but the first claim's first 4
    assert all(group == 2 and waiting + group <= 4 for waiting, group in seen), seen
    assert sender.max_in_flight == 2 and await store.pending_count() == 0


async def test_a_drain_that_keeps_up_renews_nothing(store: Store) -> None:
    """Rows let in to be sent within a second of their claim need no renewal: their claim is
    as fresh as that of a round's first claim whose bodies took that long to build. A drain
    that keeps up makes no renewal (one per claim made ahead before)."""
    m = msgs(48)
    await store.record(m, time.time())
    renewals: list[int] = []
    real_renew = store.renew_claims

    async def renew_claims(ids: Any, *args: Any, **kwargs: Any) -> set[int]:
        renewals.append(len(ids))
        return await real_renew(ids, *args, **kwargs)

    store.renew_claims = renew_claims  # type: ignore[method-assign]
    sender = ScriptedSender()
    w = worker(store, sender, concurrency=2)
    assert await asyncio.wait_for(w.deliver_due(), 10) == 48
    assert renewals == [] and len(sender.calls) == 48
    assert await store.pending_count() == 0


async def test_a_claim_s_marks_do_not_wait_for_the_next_claim(store: Store) -> None:
    """With the next claim already out and its sends held, a claim whose deliveries have all
    finished commits its marks at once (no linger)."""
    m = msgs(16)
    await store.record(m, time.time())
    claims = counting_claims(store)
    groups = counting_marks(store)
    sender = HeldSender.holding([x.msg_id for x in m])
    w = worker(store, sender, concurrency=2, commit_linger=60)  # claims of 8
    task = asyncio.ensure_future(w.deliver_due())
    # The second claim is out before the first one's sends end.
    await asyncio.wait_for(polled(lambda: len(claims) == 2), 5)
    for x in m[:8]:
        sender.answer(x.msg_id)

    async def first_claim_committed() -> None:
        while (count := w.deliveries.count("a")) < 8:
            await w.deliveries.wait("a", count)

    await asyncio.wait_for(first_claim_committed(), 5)
    assert sum(groups) == 8 and await store.pending_count() == 8
    assert sender.waiting == 2  # the next claim's first sends, still held
    for x in m[8:]:
        sender.answer(x.msg_id)
    assert await asyncio.wait_for(task, 5) == 16
    assert sum(groups) == 16 and await store.pending_count() == 0


async def test_a_claim_made_ahead_is_renewed_before_its_first_send(store: Store) -> None:
    """The claim made ahead sends nothing while the first claim's sends are held; when its
    rows are let in to be sent, long after their claim, they are renewed first, so however
    long they waited, nobody else can claim them for `claim_seconds` (30) from then on. Rows
    still waiting to be let in keep their old claim: once it lapsed, another holder may take
    them, and then this worker does not send them."""
    clock = FakeClock(time.time())
    m = msgs(16)
    await store.record(m, clock.now)
    claims = counting_claims(store)
    sender = HeldSender.holding([x.msg_id for x in m[:8]])
    others: list[list[str]] = []
    renewed: list[int] = []
    real_send, real_renew = sender.send, store.renew_claims

    async def send(target: object, msg_id: str, body: bytes) -> Result:
        if msg_id == m[8].msg_id:  # the first send of the claim made ahead
            took = await store.claim_due(clock.now + 5, 10, "other", 30)
            others.append([i.msg_id for i in took])
        return await real_send(target, msg_id, body)

    async def renew_claims(ids: Any, *args: Any, **kwargs: Any) -> set[int]:
        got = await real_renew(ids, *args, **kwargs)
        renewed.extend(got)
        return got

    sender.send = send  # type: ignore[method-assign]
    store.renew_claims = renew_claims  # type: ignore[method-assign]
    w = worker(store, sender, concurrency=2, clock=clock)  # claims of 8, claim_seconds 30
    task = asyncio.ensure_future(w.deliver_due())
    await asyncio.wait_for(polled(lambda: len(claims) == 2), 5)
    await asyncio.sleep(0.05)
    assert claims == [8, 8] and sender.waiting == 2 and sender.started == 0
    clock.now += 29  # the second claim, made at the start, would lapse in a second
    for x in m[:8]:
        sender.answer(x.msg_id)
    sent = await asyncio.wait_for(task, 5)
    # At its first send (clock + 29), a claim by another holder 5 s later did not get that
    # row's group: it had been renewed to clock + 59 (without renewal it was free from clock
    # + 30). What it got were rows not yet let in, which this worker then did not send.
    [took] = others
    assert m[8].msg_id not in took and m[9].msg_id not in took
    assert len(renewed) >= 6  # the rest of the first claim, the second claim's first group
    calls = [c[1] for c in sender.calls]
    assert sorted(calls + took) == sorted(x.msg_id for x in m)  # each row sent by one holder
    assert sent == len(calls) == 16 - len(took) and len(calls) >= 10
    assert await store.pending_count() == len(took)


async def test_a_claim_made_ahead_does_not_send_rows_whose_claim_was_lost(store: Store) -> None:
    """The claims lapse while the first sends are held, and another holder claims every row:
    the rows not yet let in to be sent fail their renewal and the worker never sends them (the
    other holder will); the rows let in with the first claim, already being sent, finish as
    before."""
    clock = FakeClock(time.time())
    m = msgs(16)
    await store.record(m, clock.now)
    claims = counting_claims(store)
    sender = HeldSender.holding([x.msg_id for x in m[:8]])
    w = worker(store, sender, concurrency=2, clock=clock)  # claims of 8, claim_seconds 30
    w.outcomes = {}
    task = asyncio.ensure_future(w.deliver_due())
    await asyncio.wait_for(polled(lambda: len(claims) == 2), 5)
    assert claims == [8, 8]
    clock.now += 31
    taken = await store.claim_due(clock.now, 20, "other", 30)
    assert {i.msg_id for i in taken} == {x.msg_id for x in m}
    for x in m[:8]:
        sender.answer(x.msg_id)
    assert await asyncio.wait_for(task, 5) == 4
    assert sorted(c[1] for c in sender.calls) == sorted(x.msg_id for x in m[:4])
    # The other holder's rows are still pending and still its own.
    assert await store.pending_count() == 12
    assert await store.claim_due(clock.now + 29, 20, "third", 30) == []
    first = {i.id for i in taken if i.msg_id in {x.msg_id for x in m[:4]}}
    assert w.outcomes == dict.fromkeys(first, "delivered")  # nothing reported for the others


async def test_run_s_grace_ends_the_claim_made_ahead_too(store: Store) -> None:
    """Stopped while the first claim's sends hang and the next claim waits behind them: when
    the grace is over both are cancelled (neither sends again), and run returns; their rows
    keep their claims for a restart."""
    m = msgs(16)
    await store.record(m, time.time())
    claims = counting_claims(store)
    sender = HeldSender.holding([x.msg_id for x in m])  # never answered
    w = worker(store, sender, concurrency=2)  # claims of 8
    stop = asyncio.Event()
    task = asyncio.ensure_future(w.run(stop, grace=0.1))
    await asyncio.wait_for(polled(lambda: len(claims) == 2), 5)
    stop.set()
    stopped = time.monotonic()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - stopped < 2  # the grace, not wait_for's timeout
    assert claims == [8, 8] and sender.calls == [] and sender.waiting == 0
    assert await store.pending_count() == 16
    assert await store.claim_due(time.time() + 1, 20, "other", 30) == []


async def test_a_slow_delivery_does_not_hold_the_others_commits(store: Store) -> None:
    """The others of its claim are committed (and reported) after the short linger, while
    the slow one is still waiting for its receiver; it is committed once it is answered."""
    m = msgs(4)
    await store.record(m, time.time())
    sender = HeldSender.holding([m[0].msg_id])
    w = worker(store, sender, concurrency=4)
    task = asyncio.ensure_future(w.deliver_due())

    async def three_delivered() -> None:
        while (count := w.deliveries.count("a")) < 3:
            await w.deliveries.wait("a", count)

    await asyncio.wait_for(three_delivered(), 5)
    assert sender.waiting == 1 and not task.done()
    assert await store.pending_count() == 1  # the three are committed, not only counted
    sender.answer(m[0].msg_id)
    assert await asyncio.wait_for(task, 5) == 4
    assert await store.pending_count() == 0


async def test_a_request_slot_is_free_while_its_row_is_committed(store: Store) -> None:
    """A delivery gives its request slot back before its row is marked: with one slot, the
    next send starts while the first delivery's commit is still running."""
    await store.record(msgs(2), time.time())
    committing = asyncio.Event()
    finish = asyncio.Event()
    real = store.mark_delivered_many

    async def slow(marks: list[tuple[int, int]], now: float, attempts: object = ()) -> None:
        committing.set()
        await finish.wait()
        await real(marks, now, attempts)  # type: ignore[arg-type]

    store.mark_delivered_many = slow  # type: ignore[assignment,method-assign]
    sender = ScriptedSender()
    w = worker(store, sender, concurrency=1)
    task = asyncio.ensure_future(w.deliver_due())
    await asyncio.wait_for(committing.wait(), 5)
    await asyncio.wait_for(sender.until(lambda: len(sender.calls) == 2), 5)
    assert await store.pending_count() == 2  # both sent, neither marked yet
    finish.set()
    assert await asyncio.wait_for(task, 5) == 2
    assert await store.pending_count() == 0


async def test_group_commit_recovers_after_a_failed_commit(store: Store) -> None:
    from bridge.delivery.worker import _GroupCommit

    await store.record(msgs(2), time.time())
    a, b = await store.claim_due(time.time() + 1, 10, "t", 30)
    group = _GroupCommit(store)
    real = store.mark_delivered_many
    store.mark_delivered_many = None  # type: ignore[assignment,method-assign]  # -> TypeError
    with pytest.raises(TypeError):
        await group.mark(a.id, 200, time.time())
    store.mark_delivered_many = real  # type: ignore[method-assign]
    await asyncio.gather(group.mark(a.id, 200, time.time()), group.mark(b.id, 204, time.time()))
    assert await store.pending_count() == 0


async def test_stop_ends_claiming_and_leaves_the_rest_pending(store: Store) -> None:
    await store.record(msgs(60), time.time())
    sender = ScriptedSender(delay=0.05)
    w = worker(store, sender, concurrency=2)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop, grace=5))
    await asyncio.wait_for(sender.until(lambda: len(sender.calls) >= 2), 10)
    stop.set()
    await asyncio.wait_for(task, 5)
    sent = len(sender.calls)
    assert 0 < sent < 60
    # What was claimed was finished and marked; nothing else was claimed or sent.
    assert await store.pending_count() == 60 - sent
    assert len(await store.claim_due(time.time() + 1, 100, "other", 30)) == 60 - sent


async def test_each_committed_delivery_wakes_its_accounts_waiters(store: Store) -> None:
    """`Deliveries` counts deliveries per account once they are committed; a failed attempt
    wakes nobody, and a waiter that read the count before they happened does not wait."""
    sender = ScriptedSender(script={"msg_" + "0" * 31 + "1": [404]})
    w = worker(store, sender)
    await store.record(msgs(3), time.time())
    before = w.deliveries.count("a")
    waiter = asyncio.ensure_future(w.deliveries.wait("a", before))
    other = asyncio.ensure_future(w.deliveries.wait("b", w.deliveries.count("b")))
    await asyncio.sleep(0)
    assert not waiter.done()
    assert await w.deliver_due() == 3
    assert w.deliveries.count("a") == before + 2  # u1 got a 404: dead-lettered
    await asyncio.wait_for(waiter, 1)
    # Every counted delivery is already committed when the waiter runs.
    assert await store.pending_count("a") == 0
    assert [d.uidl for d in await store.dead_letters()] == ["u1"]
    await w.deliveries.wait("a", before)  # the count moved on: returns at once
    assert not other.done()  # account b had no delivery
    other.cancel()

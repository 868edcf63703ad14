"""Bodies built at delivery from the raw message (the poller's deferred rows).

The poller records a message raw and the worker builds its webhook body when it claims the row.
What the receiver gets must be byte for byte what building at fetch time gave, on every retry,
from either store; a row whose body cannot be built must end as a dead letter that still holds
its raw message, never as a lost message or a retry loop.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import jsonschema
import orjson
import psutil
import pytest

from bridge import mail
from bridge.delivery.worker import DeliveryWorker, WebhookRoute
from bridge.outbox import DEFER_MAX, DeferredPayload, ParsePool, outbox_row
from bridge.store import Store
from bridge.store.base import deferred_source
from bridge.testing.samples import big_message, generate_messages
from tests.delivery.test_worker import QuickRetries, ScriptedSender
from tests.support.wait import wait_until

CORPUS = sorted((Path(__file__).resolve().parent.parent / "corpus" / "eml").glob("*.eml"))
T0 = 1_764_000_000.25


def _rows(raw: bytes, uidl: str, *, include_raw: bool = False, limit: int = 1 << 20):
    kw = dict(
        account="acct",
        uidl=uidl,
        size=len(raw),
        webhook="main",
        now=T0,
        attachment_inline_limit=limit,
        include_raw=include_raw,
    )
    return outbox_row(raw, **kw), outbox_row(raw, defer=True, **kw)  # type: ignore[arg-type]


async def _claim_built(store: Store, build: DeferredPayload) -> dict[str, bytes]:
    items = await store.claim_due(T0 + 1, 10_000, "t", 60)
    return {i.uidl: build.body(i) for i in items}


@pytest.mark.parametrize("include_raw", [False, True])
async def test_deferred_bodies_equal_bodies_built_at_fetch(store: Store, include_raw: bool) -> None:
    raws = [p.read_bytes() for p in CORPUS] + list(generate_messages(60))
    eager, deferred = {}, []
    for n, raw in enumerate(raws):
        now_row, later_row = _rows(raw, f"u{n}", include_raw=include_raw, limit=4096)
        eager[f"u{n}"] = now_row.payload
        assert deferred_source(later_row.payload) == "poller"
        assert later_row.fingerprint == now_row.fingerprint
        assert later_row.msg_id == now_row.msg_id and later_row.raw == raw
        deferred.append(later_row)
    await store.record(deferred, T0)
    build = DeferredPayload(attachment_inline_limit=4096, include_raw=include_raw)
    assert await _claim_built(store, build) == eager


async def test_claims_carry_raw_only_for_deferred_rows(store: Store) -> None:
    raw = next(iter(generate_messages(1)))
    now_row, _ = _rows(raw, "eager")
    _, later_row = _rows(raw, "later")
    await store.record([now_row, later_row], T0)
    items = {i.uidl: i for i in await store.claim_due(T0 + 1, 10, "t", 60)}
    assert items["eager"].raw is None and items["eager"].payload == now_row.payload
    assert items["later"].raw == raw and items["later"].size == len(raw)


def test_big_messages_are_still_built_at_fetch() -> None:
    raw = big_message(DEFER_MAX + 1000)
    assert len(raw) >= DEFER_MAX
    eager, deferred = _rows(raw, "big")
    assert deferred.payload == eager.payload
    assert deferred_source(deferred.payload) is None
    # ...and an oversize message (headers only) never waits for a raw body it does not have.
    head = outbox_row(
        raw[:200],
        account="a",
        uidl="o",
        size=10**9,
        webhook="main",
        now=T0,
        attachment_inline_limit=1,
        include_raw=False,
        oversize_reason="too big",
        defer=True,
    )
    assert deferred_source(head.payload) is None and head.raw is None


def _worker(store: Store, sender: ScriptedSender, prepare: object) -> DeliveryWorker:
    routes = {"main": WebhookRoute(target="main-target", policy=QuickRetries(), prepare=prepare)}  # type: ignore[arg-type]
    return DeliveryWorker(store, sender, routes, holder="t", claim_seconds=30)  # type: ignore[arg-type]


async def test_worker_sends_the_built_body_and_the_same_one_on_retry(store: Store) -> None:
    raw = next(iter(generate_messages(1)))
    eager, deferred = _rows(raw, "u1")
    await store.record([deferred], time.time())
    sender = ScriptedSender(script={deferred.msg_id: [503]})
    w = _worker(store, sender, DeferredPayload(attachment_inline_limit=1 << 20, include_raw=False))

    async def delivered() -> bool:  # the 503, then the retry once it is due (QuickRetries)
        await w.deliver_due()
        return await store.pending_count() == 0

    await wait_until(delivered)
    bodies = [body for _, msg_id, body in sender.calls if msg_id == deferred.msg_id]
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    # Same bytes as at fetch time, but for the timestamp, which is the row's created_at.
    got, want = orjson.loads(bodies[0]), orjson.loads(eager.payload)
    jsonschema.validate(got, mail.schema())
    got["timestamp"] = want["timestamp"] = None
    assert got == want


@pytest.mark.parametrize("prepare", [None, "raises"])
async def test_unbuildable_row_becomes_a_dead_letter_with_its_raw_kept(
    store: Store, prepare: object
) -> None:
    raw = next(iter(generate_messages(1)))
    _, deferred = _rows(raw, "u1")
    await store.record([deferred], time.time())

    async def broken(item: object) -> bytes:
        raise RuntimeError("parser bug")

    sender = ScriptedSender()
    w = _worker(store, sender, broken if prepare == "raises" else None)
    await w.deliver_due()
    assert sender.calls == []  # the placeholder is never sent as a body
    [dead] = await store.dead_letters()
    assert dead.msg_id == deferred.msg_id
    assert "could not be built" in (dead.last_error or "")
    assert ("parser bug" if prepare else "no builder") in (dead.last_error or "")
    assert await store.raw_message(deferred.msg_id) == raw
    # Replayed once a builder is there, it goes out as usual.
    await store.replay([dead.id], time.time())
    fixed = _worker(
        store, sender, DeferredPayload(attachment_inline_limit=1 << 20, include_raw=False)
    )
    assert await fixed.deliver_due() == 1
    assert [c[1] for c in sender.calls] == [deferred.msg_id]
    assert orjson.loads(sender.calls[0][2])["data"]["uidl"] == "u1"


async def test_parse_pool_builds_the_bodies_built_in_process(store: Store) -> None:
    raws = [p.read_bytes() for p in CORPUS] + list(generate_messages(40))
    rows = [_rows(raw, f"u{n}", limit=4096)[1] for n, raw in enumerate(raws)]
    await store.record(rows, T0)
    items = await store.claim_due(T0 + 1, 10_000, "t", 60)
    here = DeferredPayload(attachment_inline_limit=4096, include_raw=False)
    pool = ParsePool(1)
    try:
        there = DeferredPayload(attachment_inline_limit=4096, include_raw=False, pool=pool)
        inline = DeferredPayload(attachment_inline_limit=1 << 20, include_raw=True, pool=pool)
        # Concurrent requests, two option sets: batched per option set, answered per item.
        got = await asyncio.gather(*(there(i) for i in items), *(inline(i) for i in items[:5]))
    finally:
        pool.close()
    assert got[: len(items)] == [here.body(i) for i in items]
    wide = DeferredPayload(attachment_inline_limit=1 << 20, include_raw=True)
    assert got[len(items) :] == [wide.body(i) for i in items[:5]]


async def test_a_broken_parse_pool_is_restarted_and_builds_the_same_bodies(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed workers are replaced; the main process never parses (issue 19)."""
    raws = list(generate_messages(6))
    await store.record([_rows(raw, f"u{n}")[1] for n, raw in enumerate(raws)], T0)
    items = await store.claim_due(T0 + 1, 100, "t", 60)
    here = DeferredPayload(attachment_inline_limit=1 << 20, include_raw=False)
    pool = ParsePool(1)
    try:
        there = DeferredPayload(attachment_inline_limit=1 << 20, include_raw=False, pool=pool)
        assert await there(items[0]) == here.body(items[0])  # the workers are up
        for pid in pool.pids():
            process = psutil.Process(pid)
            process.kill()
            process.wait(10)
        got = await asyncio.gather(*(there(i) for i in items))
        assert got == [here.body(i) for i in items]
        assert pool.restarts >= 1
        assert any("starting a new one" in r.getMessage() for r in caplog.records)
        assert await there(items[1]) == here.body(items[1])  # and it stays that way
    finally:
        pool.close()

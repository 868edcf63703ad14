"""The custody trail, on both backends: every event is written with the change it describes."""

from __future__ import annotations

import dataclasses

from bridge.store import Store
from bridge.store.base import Attempt, CustodyEvent

from .helpers import make_message, msg_id

T0 = 1_700_000_000.0


def events(trail: list[CustodyEvent]) -> list[str]:
    return [e.event for e in trail]


def attempt(account: str, uidl: str, at: float, status: int | None, **kw: object) -> Attempt:
    fields = {"error": None, "duration": 0.012, "response_head": None, **kw}
    return Attempt(msg_id(account, uidl), account, uidl, at, status, **fields)  # type: ignore[arg-type]


async def test_a_message_life_in_its_trail(store: Store) -> None:
    m = dataclasses.replace(
        make_message("a", "1", delete=True), session="s-fetch", message_id="<m1@example>"
    )
    await store.record([m], T0)
    [item] = await store.claim_due(T0, 10, "w", 30)
    await store.mark_retry(
        item.id, T0 + 5, "HTTP 503", 503, T0 + 1, attempt("a", "1", T0 + 1, 503, error="HTTP 503")
    )
    [item] = await store.claim_due(T0 + 5, 10, "w", 30)
    head = '{"ticket": 42}'
    ok = attempt("a", "1", T0 + 6, 200, response_head=head)
    await store.mark_delivered(item.id, 200, T0 + 6, ok)
    await store.add_custody(
        [CustodyEvent(m.msg_id, "a", "1", T0 + 7, "dele_sent", session="s-del")]
    )
    await store.mark_deleted("a", ["1"], T0 + 8, "s-del")
    trail = await store.custody_trail(m.msg_id)
    assert events(trail) == ["fetched", "retry", "delivered", "dele_sent", "deleted"]
    fetched, retry, delivered, dele, deleted = trail
    assert fetched.session == "s-fetch" and fetched.message_id == "<m1@example>"
    assert fetched.detail == {"size": 3, "fingerprint": "fp-1"}
    assert fetched.status is None  # left out of the INSERT (custody._FETCHED_COLUMNS)
    assert (retry.status, retry.detail) == (503, {"error": "HTTP 503", "duration_ms": 12.0})
    assert delivered.status == 200 and delivered.detail is not None
    assert delivered.detail["response"] == head
    assert (dele.session, deleted.session, deleted.at) == ("s-del", "s-del", T0 + 8)


async def test_a_late_worker_leaves_no_false_event(store: Store) -> None:
    await store.record([make_message("a", "1")], T0)
    [item] = await store.claim_due(T0, 10, "w", 30)
    await store.mark_delivered(item.id, 204, T0 + 1, attempt("a", "1", T0 + 1, 204))
    # A worker whose claim expired tries to retry / dead-letter the delivered row: no change,
    # so no event either.
    await store.mark_retry(item.id, T0 + 9, "late", 500, T0 + 2, attempt("a", "1", T0 + 2, 500))
    await store.mark_dead(item.id, "late", 500, T0 + 3, attempt("a", "1", T0 + 3, 500))
    assert events(await store.custody_trail(msg_id("a", "1"))) == ["fetched", "delivered"]


async def test_dead_replayed_and_vanished(store: Store) -> None:
    await store.record([make_message("a", "1", delete=True)], T0)
    [item] = await store.claim_due(T0, 10, "w", 30)
    await store.mark_dead(item.id, "HTTP 400", 400, T0 + 1, attempt("a", "1", T0 + 1, 400))
    assert await store.replay(None, T0 + 2) == 1
    [item] = await store.claim_due(T0 + 2, 10, "w", 30)
    await store.mark_delivered(item.id, 200, T0 + 3, attempt("a", "1", T0 + 3, 200))
    await store.mark_deleted("a", ["1"], T0 + 4, "s", vanished=True)
    assert events(await store.custody_trail(msg_id("a", "1"))) == [
        "fetched",
        "dead",
        "replayed",
        "delivered",
        "vanished",
    ]


async def test_lookup_by_account_uidl_message_id_and_time(store: Store) -> None:
    ms = [dataclasses.replace(make_message("a", str(i)), message_id=f"<{i}@x>") for i in range(3)]
    await store.record(ms[:2], T0)
    await store.record([ms[2], make_message("b", "0")], T0 + 100)
    assert await store.custody_lookup(account="a") == [m.msg_id for m in ms]
    assert await store.custody_lookup(account="a", uidl="1") == [ms[1].msg_id]
    assert await store.custody_lookup(message_id="<2@x>") == [ms[2].msg_id]
    assert await store.custody_lookup(account="a", since=T0 + 50) == [ms[2].msg_id]
    assert await store.custody_lookup(account="c") == []


async def test_purge_keeps_what_is_recent_or_unfinished(store: Store) -> None:
    await store.record([make_message("a", str(i)) for i in range(3)], T0)
    items = {i.uidl: i for i in await store.claim_due(T0, 10, "w", 30)}
    await store.mark_delivered(items["0"].id, 200, T0 + 1, attempt("a", "0", T0 + 1, 200))
    await store.mark_delivered(items["1"].id, 200, T0 + 900, attempt("a", "1", T0 + 900, 200))
    # "2" is never delivered: its trail stays whatever its age.
    purged = await store.purge_custody(T0 + 500)
    assert purged == 2  # fetched + delivered of "0"
    assert await store.custody_trail(msg_id("a", "0")) == []
    assert events(await store.custody_trail(msg_id("a", "1"))) == ["fetched", "delivered"]
    assert events(await store.custody_trail(msg_id("a", "2"))) == ["fetched"]


async def test_ledger_and_requeue(store: Store) -> None:
    await store.record([make_message("a", str(i)) for i in range(3)], T0)
    items = {i.uidl: i for i in await store.claim_due(T0, 10, "w", 30)}
    await store.mark_delivered(items["0"].id, 200, T0 + 1, attempt("a", "0", T0 + 1, 200))
    await store.mark_dead(items["1"].id, "x", 400, T0 + 1, attempt("a", "1", T0 + 1, 400))
    await store.mark_seen("a", [("skipped", "fp")], T0)
    ledger = await store.ledger("a")
    assert ledger["0"].state == "delivered" and ledger["0"].delivered_at == T0 + 1
    assert ledger["1"].state == "dead" and ledger["1"].delivered_at is None
    assert ledger["2"].state == "pending"
    assert ledger["skipped"].seen and ledger["skipped"].state is None
    # The delivered row is pruned once its message left the server; the trail remembers it.
    assert await store.forget_missing("a", ["1", "2", "skipped"]) == 1
    gone = (await store.ledger("a"))["0"]
    assert (gone.seen, gone.state, gone.delivered_at) == (False, None, T0 + 1)
    assert gone.msg_id == msg_id("a", "0")
    # Replaying delivered and dead rows keeps their ids; unknown ones are reported missing.
    again = await store.requeue([msg_id("a", "1"), msg_id("a", "2"), "msg_nope"], T0 + 5)
    assert again == sorted([msg_id("a", "1"), msg_id("a", "2")])
    assert await store.pending_count("a") == 2
    assert events(await store.custody_trail(msg_id("a", "1")))[-1] == "replayed"

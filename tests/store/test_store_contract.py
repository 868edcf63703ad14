"""One contract, both backends: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import pytest

from bridge.store import SeenState, Store, StoreError, open_store

from .helpers import make_message, msg_id

T0 = 1_700_000_000.0


# -- migrations ---------------------------------------------------------------------------------
async def test_migrate_twice_keeps_data(store: Store) -> None:
    await store.record([make_message("a", "1")], T0)
    await store.migrate()
    assert await store.seen_uidls("a") == {"1"}


async def test_concurrent_migrate_from_several_replicas(
    store_factory: Callable[[], Store], backend: str
) -> None:
    replicas = [store_factory() for _ in range(4 if backend == "postgres" else 2)]
    await asyncio.gather(*(r.migrate() for r in replicas))
    await replicas[0].record([make_message("a", "1")], T0)
    for r in replicas:
        assert await r.seen_uidls("a") == {"1"}


async def test_use_before_migrate_is_a_store_error(store_factory: Callable[[], Store]) -> None:
    fresh = store_factory()
    with pytest.raises(StoreError):
        await fresh.seen_uidls("a")


# -- record / seen --------------------------------------------------------------------------------
async def test_record_is_idempotent_per_uidl(store: Store) -> None:
    batch = [make_message("a", str(i)) for i in range(5)]
    await store.record(batch, T0)
    await store.record(batch, T0 + 1)  # crash-restart: the same messages fetched again
    await store.record([make_message("a", "0"), make_message("a", "0")], T0 + 2)
    assert await store.seen_uidls("a") == {str(i) for i in range(5)}
    assert await store.pending_count() == 5
    items = await store.claim_due(T0 + 10, 100, "w", 30)
    assert sorted(i.uidl for i in items) == [str(i) for i in range(5)]
    assert all(i.created_at == T0 for i in items)


async def test_record_keeps_accounts_apart(store: Store) -> None:
    await store.record([make_message("a", "1"), make_message("b", "1")], T0)
    assert await store.seen_uidls("a") == {"1"}
    assert await store.seen_uidls("b") == {"1"}
    assert await store.seen_uidls("c") == set()
    assert await store.pending_count("a") == 1
    assert await store.pending_count("b") == 1
    assert await store.pending_count() == 2


async def test_record_keeps_payload_and_raw_bytes_exactly(store: Store) -> None:
    raw = bytes(range(256)) * 40 + b"\r\n.\r\n\x00"
    m = make_message("a", "1", raw=raw)
    big = make_message("a", "2", raw=None)
    await store.record([m, big], T0)
    assert await store.raw_message(m.msg_id) == raw
    assert await store.raw_message(big.msg_id) is None
    assert await store.raw_message("msg_nope") is None
    [item, _] = await store.claim_due(T0, 10, "w", 30)
    assert item.payload == m.payload
    assert item.msg_id == m.msg_id and item.webhook == "hook" and item.attempts == 0


async def test_each_recorded_row_gets_its_own_body(store: Store) -> None:
    """Bodies are keyed by the outbox row's id, which `record` learns from the insert
    (SQLite: from `lastrowid`, not RETURNING): over several statements' worth of rows, each
    message's body is its own."""
    batch = [make_message("a", str(i), raw=b"raw %d" % i) for i in range(250)]
    await store.record(batch[:3], T0)
    await store.record(batch, T0 + 1)
    for m in batch:
        assert await store.raw_message(m.msg_id) == m.raw
    items = await store.claim_due(T0 + 10, 300, "w", 30)
    assert sorted((i.uidl, i.payload) for i in items) == sorted((m.uidl, m.payload) for m in batch)


async def test_a_replayed_record_adds_bodies_only_for_the_rows_it_inserts(store: Store) -> None:
    """`replay` skips the seen check, so some rows already exist and the insert skips them
    (ON CONFLICT DO NOTHING): the rows inserted now get their bodies under their own ids, and
    the rows that were there keep theirs (first copy wins), in one statement and across
    several."""
    old = [make_message("a", str(i), raw=b"first %d" % i) for i in range(0, 240, 3)]
    await store.record(old, T0)
    again = [make_message("a", str(i), raw=b"second %d" % i) for i in range(240)]
    await store.record(again, T0 + 1, replay=True)
    for m in again:
        first = int(m.uidl) % 3 == 0
        assert await store.raw_message(m.msg_id) == (b"first " if first else b"second ") + (
            m.uidl.encode()
        )
    assert await store.pending_count() == 240


async def test_record_keeps_multi_megabyte_bodies_exactly(store: Store) -> None:
    """Bodies over a megabyte take SQLite's streamed-blob path; every byte must survive it,
    a second copy of the same UIDL must not overwrite the first, and a raw-less one too."""
    raw = bytes(range(256)) * (9 * 1024) + b"\r\n.\r\n\x00"  # 2.25 MiB + tail
    m = make_message("a", "1", raw=raw)
    m = dataclasses.replace(m, payload=b'{"p":"' + raw.hex()[:1_500_000].encode() + b'"}')
    no_raw = dataclasses.replace(make_message("a", "2", raw=None), payload=m.payload[::-1])
    small = make_message("a", "3")
    again = dataclasses.replace(m, raw=b"other", payload=b"{}")
    await store.record([m, no_raw, small, again], T0)
    await store.record([dataclasses.replace(m, raw=raw[::-1])], T0)
    assert await store.raw_message(m.msg_id) == raw
    assert await store.raw_message(no_raw.msg_id) is None
    assert await store.raw_message(small.msg_id) == b"raw"
    items = {i.uidl: i for i in await store.claim_due(T0, 10, "w", 30)}
    assert set(items) == {"1", "2", "3"}
    assert items["1"].payload == m.payload
    assert items["2"].payload == no_raw.payload
    assert items["3"].payload == small.payload


async def test_mark_seen_does_not_deliver(store: Store) -> None:
    await store.mark_seen("a", [("1", "fp1"), ("2", "fp2")], T0)
    assert await store.seen_uidls("a") == {"1", "2"}
    assert await store.pending_count() == 0
    # A message later fetched under a seen UIDL is not recorded again.
    await store.record([make_message("a", "1")], T0)
    assert await store.pending_count() == 0


async def test_polled_flag_is_separate_from_the_seen_set(store: Store) -> None:
    assert await store.seen_state("a") == SeenState(set(), polled=False)
    await store.mark_polled("a", [("1", "fp1"), ("2", "fp2")], T0)
    assert await store.seen_state("a") == SeenState({"1", "2"}, polled=True)
    assert await store.seen_uidls("a") == {"1", "2"}
    assert await store.pending_count("a") == 0  # seen, not delivered
    assert await store.known_fingerprints("a", ["fp1"]) == {"fp1"}
    await store.mark_polled("b", [], T0)  # an empty mailbox is polled too
    assert await store.seen_state("b") == SeenState(set(), polled=True)
    # Pruning the seen set (a mailbox emptied by deletion) never forgets that it was polled.
    assert await store.forget_missing("a", []) == 2
    assert await store.seen_state("a") == SeenState(set(), polled=True)
    await store.mark_polled("a", [("3", "fp3")], T0 + 1)  # idempotent on the flag
    assert await store.seen_state("a") == SeenState({"3"}, polled=True)
    assert await store.seen_state("c") == SeenState(set(), polled=False)


async def test_known_fingerprints(store: Store) -> None:
    await store.record([make_message("a", "1", fingerprint="f1")], T0)
    await store.mark_seen("a", [("2", "f2")], T0)
    await store.record([make_message("b", "9", fingerprint="f9")], T0)
    assert await store.known_fingerprints("a", ["f1", "f2", "f3", "f9"]) == {"f1", "f2"}
    assert await store.known_fingerprints("a", []) == set()
    many = [f"x{i}" for i in range(1500)] + ["f1"]
    assert await store.known_fingerprints("a", many) == {"f1"}


async def test_fingerprints_of(store: Store) -> None:
    await store.record([make_message("a", "1", fingerprint="f1")], T0)
    await store.mark_seen("a", [("2", "f2")], T0)
    await store.record([make_message("b", "1", fingerprint="f9")], T0)
    assert await store.fingerprints_of("a", ["1", "2", "3"]) == {"1": "f1", "2": "f2"}
    assert await store.fingerprints_of("a", []) == {}
    many = [f"x{i}" for i in range(1500)] + ["2"]
    assert await store.fingerprints_of("a", many) == {"2": "f2"}


async def test_migration_rekey_flow(store: Store) -> None:
    """All UIDLs change: re-key by fingerprint without a second outbox row, old keys pruned."""
    await store.record([make_message("a", f"old{i}", fingerprint=f"f{i}") for i in range(3)], T0)
    for item in await store.claim_due(T0, 10, "w", 30):
        await store.mark_delivered(item.id, 200, T0)
    new = {f"new{i}": f"f{i}" for i in range(3)}
    assert await store.known_fingerprints("a", new.values()) == {"f0", "f1", "f2"}
    await store.mark_seen("a", list(new.items()), T0 + 1)
    assert await store.forget_missing("a", new.keys()) == 3
    assert await store.seen_uidls("a") == set(new)
    assert await store.pending_count() == 0


# -- forget_missing -----------------------------------------------------------------------------
async def test_forget_missing_guards_unfinished_work(store: Store) -> None:
    await store.record(
        [
            make_message("a", "pending"),
            make_message("a", "dead"),
            make_message("a", "done"),
            make_message("a", "del-unconfirmed", delete=True),
            make_message("a", "del-confirmed", delete=True),
            make_message("a", "still-there"),
        ],
        T0,
    )
    await store.mark_seen("a", [("seen-only", "x")], T0)
    await store.record([make_message("b", "pending")], T0)
    by_uidl = {i.uidl: i for i in await store.claim_due(T0, 100, "w", 30) if i.account == "a"}
    await store.mark_dead(by_uidl["dead"].id, "HTTP 500", 500, T0)
    for u in ("done", "del-unconfirmed", "del-confirmed", "still-there"):
        await store.mark_delivered(by_uidl[u].id, 204, T0)
    await store.mark_retry(by_uidl["pending"].id, T0 + 60, "timeout", None, T0)
    await store.mark_deleted("a", ["del-confirmed"], T0)

    dropped = await store.forget_missing("a", ["still-there"])
    assert dropped == 3  # done, del-confirmed, seen-only
    assert await store.seen_uidls("a") == {"pending", "dead", "del-unconfirmed", "still-there"}
    assert await store.seen_uidls("b") == {"pending"}
    assert await store.raw_message(msg_id("a", "done")) is None  # bodies pruned with the row
    assert await store.raw_message(msg_id("a", "still-there")) == b"raw"
    assert await store.forget_missing("a", ["still-there"]) == 0


async def test_forgotten_uidl_that_returns_is_new_again(store: Store) -> None:
    await store.record([make_message("a", "1")], T0)
    [item] = await store.claim_due(T0, 10, "w", 30)
    await store.mark_delivered(item.id, 200, T0)
    assert await store.forget_missing("a", []) == 1
    await store.record([make_message("a", "1")], T0 + 5)
    assert await store.pending_count() == 1


async def test_mark_delivered_many_marks_a_group_in_one_go(store: Store) -> None:
    await store.record([make_message("a", str(i)) for i in range(5)], T0)
    items = await store.claim_due(T0, 10, "w", 30)
    await store.mark_delivered(items[0].id, 200, T0)
    await store.mark_delivered_many([], T0)  # nothing to do
    # The already delivered row is left as it was (its attempt count does not move).
    await store.mark_delivered_many([(i.id, 200 + n) for n, i in enumerate(items[:4])], T0 + 1)
    assert await store.pending_count() == 1
    [last] = await store.claim_due(T0 + 100, 10, "w", 30)  # the unmarked claim expired
    assert last.id == items[4].id
    await store.mark_delivered_many([(last.id, 204)], T0 + 2)
    assert await store.pending_count() == 0
    assert await store.claim_due(T0 + 1000, 10, "w", 30) == []


# -- claims -------------------------------------------------------------------------------------
async def test_claim_respects_due_time_order_and_limit(store: Store) -> None:
    await store.record([make_message("a", str(i)) for i in range(5)], T0)
    first = await store.claim_due(T0, 2, "w", 30)
    assert len(first) == 2
    await store.mark_retry(first[0].id, T0 + 100, "boom", 503, T0)
    rest = await store.claim_due(T0, 10, "w", 30)
    assert len(rest) == 3  # first[1] is claimed, first[0] is not due
    assert [i.id for i in rest] == sorted(i.id for i in rest)
    assert await store.claim_due(T0 + 29, 10, "w", 30) == []
    # At T0+100 the four unfinished claims have expired and the retried item is due; the
    # retried one sorts last (due latest).
    later = await store.claim_due(T0 + 100, 10, "w", 30)
    assert len(later) == 5
    again = later[-1]
    assert again.id == first[0].id and again.attempts == 1 and again.last_error == "boom"
    assert await store.claim_due(T0, 0, "w", 30) == []


async def test_claim_expiry_hands_item_to_another_worker(store: Store) -> None:
    await store.record([make_message("a", "1")], T0)
    [item] = await store.claim_due(T0, 10, "w1", 30)
    assert await store.claim_due(T0 + 29, 10, "w2", 30) == []
    [again] = await store.claim_due(T0 + 30, 10, "w2", 30)
    assert again.id == item.id
    # The slow first worker reports success late: it counts, and the row stays delivered.
    await store.mark_delivered(item.id, 200, T0 + 31)
    await store.mark_retry(again.id, T0 + 90, "late failure", 500, T0 + 32)
    assert await store.pending_count() == 0
    assert await store.claim_due(T0 + 1000, 10, "w3", 30) == []


async def test_renew_claims_extends_only_claims_the_holder_still_holds(store: Store) -> None:
    """Renewed: pending rows claimed by the holder and not yet expired. Left alone: a row
    delivered, dead, released by a retry, claimed by another holder after it expired, or
    expired (even if nobody took it since), and a row never claimed."""
    await store.record([make_message("a", str(i)) for i in range(7)], T0)
    ours = await store.claim_due(T0, 6, "w", 30)  # rows 0-5; row 6 stays unclaimed
    ids = [i.id for i in ours]
    await store.mark_delivered(ids[1], 200, T0 + 1)
    await store.mark_dead(ids[2], "gone", 410, T0 + 1)
    await store.mark_retry(ids[3], T0 + 5, "HTTP 503", 503, T0 + 1)
    unclaimed = (await store.claim_due(T0 + 1, 1, "probe", 0.5))[0].id  # row 6, lapses at once
    assert await store.renew_claims([*ids, unclaimed], "w", T0 + 2, 30) == {ids[0], ids[4], ids[5]}
    assert await store.renew_claims([], "w", T0 + 2, 30) == set()
    # The renewed claims now last to T0 + 32: nobody else can take them before.
    assert {i.id for i in await store.claim_due(T0 + 31, 10, "other", 30)} == {ids[3], unclaimed}
    assert await store.renew_claims([ids[3]], "w", T0 + 31, 30) == set()  # "other"'s now
    # Past T0 + 32 the holder's claim has lapsed: not renewed, though nobody took row 0 yet.
    assert await store.renew_claims([ids[0]], "w", T0 + 32, 30) == set()
    [taken] = await store.claim_due(T0 + 33, 1, "other", 30)
    assert taken.id == ids[0]
    assert await store.renew_claims([ids[0], ids[4]], "w", T0 + 33, 30) == set()
    assert await store.renew_claims([ids[0]], "other", T0 + 34, 30) == {ids[0]}


async def test_concurrent_claimers_never_share_an_item(
    store: Store, store_factory: Callable[[], Store], backend: str
) -> None:
    n_items = 300
    await store.record([make_message("a", str(i)) for i in range(n_items)], T0)
    replicas = [store] + [store_factory() for _ in range(3 if backend == "postgres" else 1)]
    for r in replicas[1:]:
        await r.migrate()

    async def worker(s: Store, name: str) -> list[int]:
        got: list[int] = []
        while True:
            batch = await s.claim_due(T0, 7, name, 60)
            if not batch:
                return got
            got.extend(i.id for i in batch)

    results = await asyncio.gather(
        *(worker(replicas[k % len(replicas)], f"w{k}") for k in range(8))
    )
    everything = [i for r in results for i in r]
    assert len(everything) == n_items
    assert len(set(everything)) == n_items
    assert sum(1 for r in results if r) > 1  # the work was actually shared


async def test_retry_then_dead_then_replay(store: Store) -> None:
    await store.record([make_message("a", "1"), make_message("a", "2")], T0)
    items = await store.claim_due(T0, 10, "w", 30)
    one, two = items
    await store.mark_retry(one.id, T0 + 10, "HTTP 503", 503, T0)
    [one] = await store.claim_due(T0 + 10, 10, "w", 30)
    await store.mark_dead(one.id, "HTTP 410 gone", 410, T0 + 11)
    await store.mark_dead(two.id, "connection refused", None, T0 + 12)
    assert await store.pending_count() == 0
    assert await store.next_due_at() is None
    dead = await store.dead_letters()
    assert [d.uidl for d in dead] == ["1", "2"]
    assert (dead[0].attempts, dead[0].last_status, dead[0].last_error) == (2, 410, "HTTP 410 gone")
    assert dead[0].failed_at == T0 + 11 and dead[0].created_at == T0
    assert dead[1].last_status is None
    assert len(await store.dead_letters(limit=1)) == 1
    # Dead letters are never pruned away while absent from the server.
    assert await store.forget_missing("a", []) == 0

    assert await store.replay([dead[0].id, 999_999], T0 + 20) == 1
    assert await store.replay([dead[0].id], T0 + 20) == 0  # not dead any more
    [back] = await store.claim_due(T0 + 20, 10, "w", 30)
    assert back.id == dead[0].id and back.attempts == 0 and back.next_attempt_at == T0 + 20
    assert await store.replay(None, T0 + 30) == 1
    assert await store.dead_letters() == []
    assert await store.pending_count() == 2


async def test_next_due_at(store: Store) -> None:
    assert await store.next_due_at() is None
    await store.record([make_message("a", "1"), make_message("a", "2")], T0)
    assert await store.next_due_at() == T0
    for item in await store.claim_due(T0, 10, "w", 30):
        await store.mark_retry(item.id, T0 + 50 + int(item.uidl), "x", None, T0)
    assert await store.next_due_at() == T0 + 51


async def test_retry_schedule_survives_reopen(store: Store, store_url: str) -> None:
    await store.record([make_message("a", "1")], T0)
    [item] = await store.claim_due(T0, 10, "w", 30)
    await store.mark_retry(item.id, T0 + 3600, "HTTP 502", 502, T0)
    await store.close()
    reopened = open_store(store_url)
    try:
        await reopened.migrate()
        assert await reopened.next_due_at() == T0 + 3600
        assert await reopened.claim_due(T0 + 3599, 10, "w", 30) == []
        [again] = await reopened.claim_due(T0 + 3600, 10, "w", 30)
        assert again.attempts == 1
    finally:
        await reopened.close()


# -- deletion --------------------------------------------------------------------------------------
async def test_deletable_only_after_2xx_and_until_confirmed(store: Store) -> None:
    await store.record(
        [
            make_message("a", "keep"),
            make_message("a", "d1", delete=True),
            make_message("a", "d2", delete=True),
            make_message("a", "d3", delete=True),
        ],
        T0,
    )
    assert await store.deletable_uidls("a") == []
    by = {i.uidl: i for i in await store.claim_due(T0, 10, "w", 30)}
    await store.mark_delivered(by["keep"].id, 200, T0)
    await store.mark_delivered(by["d1"].id, 202, T0)
    await store.mark_retry(by["d2"].id, T0 + 5, "HTTP 500", 500, T0)
    await store.mark_dead(by["d3"].id, "HTTP 400", 400, T0)
    assert await store.deletable_uidls("a") == ["d1"]
    assert await store.deletable_uidls("b") == []
    await store.mark_deleted("a", ["d1"], T0 + 1)
    assert await store.deletable_uidls("a") == []
    assert await store.forget_missing("a", ["keep", "d2", "d3"]) == 1


# -- stats --------------------------------------------------------------------------------
async def test_account_stats(store: Store) -> None:
    assert await store.account_stats(T0) == []
    await store.record([make_message("a", "1"), make_message("a", "2")], T0)
    await store.record([make_message("b", "1")], T0 + 5)
    items = {(i.account, i.uidl): i for i in await store.claim_due(T0 + 5, 10, "w", 30)}
    await store.mark_dead(items[("a", "1")].id, "x", 500, T0 + 6)
    await store.mark_delivered(items[("b", "1")].id, 200, T0 + 6)
    stats = await store.account_stats(T0 + 7)
    assert [(s.account, s.pending, s.dead, s.oldest_pending_at) for s in stats] == [("a", 1, 1, T0)]


# -- leases --------------------------------------------------------------------------------------
async def test_leases_are_exclusive_and_expire(store: Store) -> None:
    accts = ["a", "b", "c"]
    assert await store.acquire_leases("r1", accts, 30, T0, None) == {"a", "b", "c"}
    assert await store.acquire_leases("r2", accts, 30, T0 + 1, None) == set()
    assert await store.lease_holders(T0 + 1) == {"a": "r1", "b": "r1", "c": "r1"}
    # r1 renews; r2 still cannot take them
    assert await store.renew_leases("r1", 30, T0 + 20) == {"a", "b", "c"}
    assert await store.acquire_leases("r2", accts, 30, T0 + 31, None) == set()
    # r1 dies (no renewal): after the TTL the leases are r2's
    assert await store.lease_holders(T0 + 50) == {}
    assert await store.acquire_leases("r2", accts, 30, T0 + 50, None) == {"a", "b", "c"}
    assert await store.renew_leases("r1", 30, T0 + 51) == set()
    assert await store.lease_holders(T0 + 51) == {"a": "r2", "b": "r2", "c": "r2"}


async def test_release_hands_over_at_once(store: Store) -> None:
    await store.acquire_leases("r1", ["a", "b"], 30, T0, None)
    await store.release_leases("r1", ["a"])
    assert await store.acquire_leases("r2", ["a", "b"], 30, T0, None) == {"a"}
    await store.release_leases("r1")
    assert await store.acquire_leases("r2", ["a", "b"], 30, T0, None) == {"a", "b"}
    assert await store.renew_leases("r1", 30, T0) == set()


async def test_acquire_extends_own_and_respects_max_count(store: Store) -> None:
    accts = [f"acct{i}" for i in range(10)]
    got = await store.acquire_leases("r1", accts, 30, T0, 3)
    assert got == {"acct0", "acct1", "acct2"}
    # Already at its share: nothing new, but its own leases in the list are extended.
    assert await store.acquire_leases("r1", accts, 30, T0 + 20, 3) == got
    assert await store.lease_holders(T0 + 45) == dict.fromkeys(sorted(got), "r1")
    assert await store.acquire_leases("r1", accts, 30, T0 + 20, 5) == got | {"acct3", "acct4"}


async def test_fair_share_across_replicas(
    store: Store, store_factory: Callable[[], Store], backend: str
) -> None:
    accts = [f"acct{i:02d}" for i in range(20)]
    names = ["r1", "r2", "r3"]
    replicas = [store] + [store_factory() for _ in names[1:]]
    for r in replicas[1:]:
        await r.migrate()
    for r, name in zip(replicas, names, strict=True):
        n = await r.heartbeat(name, T0, 30)
        assert 1 <= n <= 3
    live = await store.heartbeat("r1", T0 + 1, 30)
    assert live == 3
    share = -(-len(accts) // live)
    results = await asyncio.gather(
        *(
            r.acquire_leases(n, accts, 30, T0 + 1, share)
            for r, n in zip(replicas, names, strict=True)
        )
    )
    for got in results:
        assert len(got) <= share
    union = set().union(*results)
    assert sum(len(g) for g in results) == len(union)  # nobody shares an account
    assert union == set(accts)  # 3 * ceil(20/3) >= 20, so every account has an owner
    # r3 dies: its heartbeat and leases expire; the two survivors split its accounts.
    for t in (T0 + 20, T0 + 40):
        await store.heartbeat("r1", t, 30)
        await replicas[1].heartbeat("r2", t, 30)
        await store.renew_leases("r1", 30, t)
        await replicas[1].renew_leases("r2", 30, t)
    live = await store.heartbeat("r1", T0 + 40, 30)
    assert live == 2
    share = -(-len(accts) // live)
    got1 = await store.acquire_leases("r1", accts, 30, T0 + 40, share)
    got2 = await replicas[1].acquire_leases("r2", accts, 30, T0 + 40, share)
    assert len(got1) <= share and len(got2) <= share
    assert got1 | got2 == set(accts) and not got1 & got2


async def test_heartbeat_counts_live_replicas(store: Store) -> None:
    assert await store.heartbeat("r1", T0, 30) == 1
    assert await store.heartbeat("r2", T0 + 1, 30) == 2
    assert await store.heartbeat("r1", T0 + 2, 30) == 2
    assert await store.heartbeat("r1", T0 + 40, 30) == 1  # r2 stopped beating at T0+1


async def test_contended_lease_has_one_winner(
    store: Store, store_factory: Callable[[], Store], backend: str
) -> None:
    n = 6 if backend == "postgres" else 2
    replicas = [store] + [store_factory() for _ in range(n - 1)]
    for r in replicas[1:]:
        await r.migrate()
    accts = [f"x{i}" for i in range(30)]
    results = await asyncio.gather(
        *(r.acquire_leases(f"r{k}", accts, 30, T0, None) for k, r in enumerate(replicas))
    )
    assert sum(len(g) for g in results) == len(accts)
    assert set().union(*results) == set(accts)
    holders = await store.lease_holders(T0)
    for k, got in enumerate(results):
        assert all(holders[a] == f"r{k}" for a in got)


# -- accounts table ----------------------------------------------------------------------
async def test_accounts_crud(store: Store) -> None:
    assert await store.list_accounts() == []
    cfg = {"host": "pop.example.net", "port": 995, "user": "ann", "tags": ["ü", 1.5, None]}
    await store.add_account("ann", cfg, T0)
    await store.add_account("bob", {"host": "h"}, T0)
    assert await store.list_accounts() == [("ann", cfg), ("bob", {"host": "h"})]
    await store.add_account("bob", {"host": "h2"}, T0 + 1)  # replace, not duplicate
    assert await store.list_accounts() == [("ann", cfg), ("bob", {"host": "h2"})]
    assert await store.remove_account("ann") is True
    assert await store.remove_account("ann") is False
    assert await store.list_accounts() == [("bob", {"host": "h2"})]


async def test_closed_store_refuses(store_factory: Callable[[], Store]) -> None:
    s = store_factory()
    await s.migrate()
    await s.close()
    with pytest.raises(StoreError, match="closed"):
        await s.pending_count()


async def test_live_replicas_lists_unexpired_heartbeats(store: Store) -> None:
    assert await store.live_replicas(T0) == []
    await store.heartbeat("r2", T0, 30)
    await store.heartbeat("r1", T0 + 10, 30)
    assert await store.live_replicas(T0 + 11) == ["r1", "r2"]
    assert await store.live_replicas(T0 + 30) == ["r1"]  # r2's beat ran out at T0+30
    assert await store.live_replicas(T0 + 40) == []

"""One poll of one account against a real Dovecot and a real SQLite store."""

from __future__ import annotations

import dataclasses
import time

import jsonschema
import orjson
import pytest

from bridge import mail
from bridge.delivery.ids import msg_id_for
from bridge.delivery.worker import Deliveries
from bridge.outbox import DeferredPayload
from bridge.poller.poll import poll_account
from bridge.poller.spec import AccountSpec
from bridge.store import OutboxItem, Store
from bridge.testing.samples import big_message, generate_messages
from tests.poller.conftest import dovecot_spec
from tests.support.dovecot import DovecotServer, DovecotUser

pytestmark = pytest.mark.dovecot


async def claim_all(store: Store, *, include_raw: bool = False) -> list[OutboxItem]:
    """Claimed rows with their webhook bodies, built as the worker builds deferred ones."""
    items = await store.claim_due(time.time() + 1, 10_000, "test", 60)
    build = DeferredPayload(attachment_inline_limit=1 << 20, include_raw=include_raw)
    return [dataclasses.replace(item, payload=build.body(item)) for item in items]


async def deliver_all(store: Store) -> list[OutboxItem]:
    """What a worker getting 2xx for everything would do."""
    items = await claim_all(store)
    for item in items:
        await store.mark_delivered(item.id, 200, time.time())
    return items


async def test_new_mail_is_recorded_once_in_mailbox_order(
    dovecot: DovecotServer, dovecot_user: DovecotUser, store: Store
) -> None:
    msgs = generate_messages(7, seed=11)
    dovecot.deliver_many(dovecot_user, msgs)
    spec = dovecot_spec(dovecot, dovecot_user)

    report = await poll_account(spec, store)
    assert (report.on_server, report.new, report.recorded) == (7, 7, 7)
    assert report.bytes_fetched >= sum(len(m) for m in msgs) - 7 * 10

    items = await claim_all(store)
    assert len(items) == 7
    subjects = []
    for item in sorted(items, key=lambda i: i.id):
        body = orjson.loads(item.payload)
        jsonschema.validate(body, mail.schema())
        assert body["data"]["id"] == item.msg_id == msg_id_for(spec.name, item.uidl)
        assert body["data"]["account"] == spec.name
        assert body["data"]["source"] == "poller"
        assert await store.raw_message(item.msg_id) is not None
        subjects.append(body["data"]["message_id"])
    # Outbox order is mailbox order.
    expected = [
        mail.build_message_data(m, attachment_inline_limit=0, include_raw=False)["message_id"]
        for m in msgs
    ]
    assert subjects == expected

    again = await poll_account(spec, store)
    assert (again.new, again.recorded) == (0, 0)

    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=12))
    third = await poll_account(spec, store)
    assert (third.on_server, third.new, third.recorded) == (9, 2, 2)
    # keep mode: nothing was removed from the server
    assert dovecot.message_count(dovecot_user) == 9


async def test_initial_new_skips_existing_mail_but_not_later_mail(
    dovecot: DovecotServer, dovecot_user: DovecotUser, store: Store
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(3, seed=21))
    spec = dovecot_spec(dovecot, dovecot_user, initial="new")
    first = await poll_account(spec, store)
    assert (first.marked_initial, first.recorded) == (3, 0)
    assert await store.pending_count(spec.name) == 0

    dovecot.deliver_many(dovecot_user, generate_messages(1, seed=22))
    second = await poll_account(spec, store)
    assert second.recorded == 1


async def test_initial_new_on_an_empty_mailbox_still_delivers_the_first_mail(
    dovecot: DovecotServer, dovecot_user: DovecotUser, store: Store
) -> None:
    spec = dovecot_spec(dovecot, dovecot_user, initial="new")
    assert (await poll_account(spec, store)).marked_initial == 0
    assert (await store.seen_state(spec.name)).polled
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=23))
    assert (await poll_account(spec, store)).recorded == 2


async def test_delete_mode_deletes_only_after_delivery(
    dovecot: DovecotServer, dovecot_user: DovecotUser, store: Store
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(4, seed=31))
    spec = dovecot_spec(dovecot, dovecot_user, on_delivered="delete")

    # Nobody delivers: the session waits a little, then QUITs without deleting anything.
    report = await poll_account(spec, store, deliveries=Deliveries(), delete_wait=0.2)
    assert (report.recorded, report.deleted) == (4, 0)
    assert dovecot.message_count(dovecot_user) == 4

    # Two get a 2xx, two fail: only the two are deleted on the next poll.
    items = sorted(await claim_all(store), key=lambda i: i.id)
    for item in items[:2]:
        await store.mark_delivered(item.id, 204, time.time())
    for item in items[2:]:
        await store.mark_retry(item.id, time.time() + 3600, "HTTP 500", 500, time.time())
    report = await poll_account(spec, store, deliveries=Deliveries(), delete_wait=0.2)
    assert (report.new, report.deleted) == (0, 2)
    assert dovecot.message_count(dovecot_user) == 2
    assert await store.deletable_uidls(spec.name) == []
    # The deleted UIDLs were pruned from the seen set; the undelivered ones were kept.
    seen = await store.seen_uidls(spec.name)
    assert {i.uidl for i in items[2:]} <= seen
    assert not {i.uidl for i in items[:2]} & seen


async def test_delete_mode_deletes_in_the_same_session_when_delivery_is_quick(
    dovecot: DovecotServer, dovecot_user: DovecotUser, store: Store
) -> None:
    import asyncio

    dovecot.deliver_many(dovecot_user, generate_messages(3, seed=32))
    spec = dovecot_spec(dovecot, dovecot_user, on_delivered="delete")
    tasks: list[asyncio.Task[list[OutboxItem]]] = []
    deliveries = Deliveries()

    async def deliver_and_tell() -> list[OutboxItem]:
        items = await deliver_all(store)
        for item in items:
            deliveries.delivered(item.account)
        return items

    def notify() -> None:  # a worker that delivers as soon as it is woken
        tasks.append(asyncio.ensure_future(deliver_and_tell()))

    report = await poll_account(spec, store, notify=notify, deliveries=deliveries, delete_wait=5)
    await asyncio.gather(*tasks)
    assert (report.recorded, report.deleted) == (3, 3)
    assert dovecot.message_count(dovecot_user) == 0


async def test_delete_mode_asks_the_store_again_only_when_the_worker_says_so(
    dovecot: DovecotServer, dovecot_user: DovecotUser, store: Store
) -> None:
    """The wait for this session's deliveries is woken by the worker's `Deliveries`, not by
    asking the store every few milliseconds: without a delivery it asks once when it starts
    waiting and once at the deadline (another replica's worker may have delivered)."""
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=33))
    spec = dovecot_spec(dovecot, dovecot_user, on_delivered="delete")
    asked: list[float] = []
    real = store.deletable_uidls

    async def counted(account: str) -> list[str]:
        asked.append(time.monotonic())
        return await real(account)

    store.deletable_uidls = counted  # type: ignore[method-assign]
    report = await poll_account(spec, store, deliveries=Deliveries(), delete_wait=0.5)
    assert (report.recorded, report.deleted) == (2, 0)
    # Once before the fetch (what earlier polls delivered), then the two of the wait.
    assert len(asked) == 3
    assert asked[2] - asked[1] >= 0.5


async def test_an_error_mid_session_deletes_nothing(
    dovecot: DovecotServer, dovecot_user: DovecotUser, store: Store
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(3, seed=41))
    spec = dovecot_spec(dovecot, dovecot_user, on_delivered="delete")
    await poll_account(spec, store, delete_wait=0)
    await deliver_all(store)
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=42))

    class Boom(Exception):
        pass

    real_record = store.record

    async def failing_record(*args: object, **kwargs: object) -> None:
        raise Boom("disk on fire")

    store.record = failing_record  # type: ignore[method-assign]
    with pytest.raises(Boom):
        await poll_account(spec, store, delete_wait=0)
    store.record = real_record  # type: ignore[method-assign]
    # The DELEs of the 3 delivered messages were sent, but without QUIT nothing happened.
    assert dovecot.message_count(dovecot_user) == 5
    assert len(await store.deletable_uidls(spec.name)) == 3

    report = await poll_account(spec, store, delete_wait=0)
    assert (report.recorded, report.deleted) == (2, 3)
    assert dovecot.message_count(dovecot_user) == 2


async def test_oversize_message_becomes_metadata_only_and_is_never_deleted(
    dovecot: DovecotServer, dovecot_user: DovecotUser, store: Store
) -> None:
    small = generate_messages(2, seed=51)
    dovecot.deliver_many(dovecot_user, [small[0], big_message(200_000, seed=5), small[1]])
    spec = dovecot_spec(dovecot, dovecot_user, max_message_size=50_000, on_delivered="delete")
    report = await poll_account(spec, store, delete_wait=0)
    assert (report.recorded, report.oversize) == (3, 1)
    items = sorted(await claim_all(store), key=lambda i: i.id)
    bodies = [orjson.loads(i.payload) for i in items]
    for body in bodies:
        jsonschema.validate(body, mail.schema())
    big = bodies[1]["data"]
    assert big["size"] > 50_000
    assert big["text"] is None and big["raw"] is None
    assert "max_message_size" in big["parse_errors"][0]
    assert big["message_id"] is not None
    assert await store.raw_message(items[1].msg_id) is None
    for item in items:
        await store.mark_delivered(item.id, 200, time.time())
    report = await poll_account(spec, store, delete_wait=0)
    assert report.deleted == 2
    assert dovecot.message_count(dovecot_user) == 1


async def test_mass_uidl_change_is_rekeyed_not_redelivered(store: Store) -> None:
    from bridge.poller.migration import suspicious
    from bridge.testing.fakepop3 import FakePOP3Server

    assert not suspicious(["a", "b", "c"], {"a", "b"}, {"c"})  # ordinary new mail
    assert suspicious(["x", "y"], {"a", "b"}, {"x", "y"})

    box = generate_messages(6, seed=71)
    async with FakePOP3Server(box, user="u", password="pw") as server:
        spec = migrating_spec(server)
        first = await poll_account(spec, store)
        assert first.recorded == 6
        await deliver_all(store)
        # The server is migrated: every message gets a new UIDL, and one new message arrives.
        for i in range(6):
            server.set_uidl(i, f"migrated-{i}")
        server.mailbox.append(generate_messages(1, seed=72)[0])
        second = await poll_account(spec, store)
    assert (second.rekeyed, second.recorded) == (6, 1)
    [item] = await claim_all(store)
    assert item.uidl == server.uidls[-1]
    seen = await store.seen_uidls(spec.name)
    assert {f"migrated-{i}" for i in range(6)} <= seen


def migrating_spec(server: object) -> AccountSpec:
    return AccountSpec(
        name="migrating",
        host="127.0.0.1",
        port=server.port,
        tls="none",  # type: ignore[attr-defined]
        username="u",
        password="pw",
        allow_plaintext=True,
        webhook="main",
    )


async def test_hostile_corpus_through_dovecot_gives_schema_valid_payloads(
    dovecot: DovecotServer, dovecot_user: DovecotUser, store: Store
) -> None:
    from pathlib import Path

    corpus = sorted((Path(__file__).parent.parent / "corpus" / "eml").glob("*.eml"))
    assert len(corpus) >= 20
    dovecot.deliver_many(dovecot_user, [p.read_bytes() for p in corpus])
    spec = dovecot_spec(dovecot, dovecot_user)
    report = await poll_account(spec, store)
    assert report.recorded == len(corpus)
    items = await claim_all(store)
    assert len({i.msg_id for i in items}) == len(corpus)
    for item in items:
        jsonschema.validate(orjson.loads(item.payload), mail.schema())


async def test_idle_poll_sends_no_list_and_writes_nothing_until_mail_leaves(
    store: Store,
) -> None:
    """An idle poll is UIDL and QUIT: no LIST (sizes only matter for new mail) and no prune
    transaction while every seen UIDL is still on the server; a message that leaves is still
    forgotten."""
    from bridge.testing.fakepop3 import FakePOP3Server

    box = generate_messages(3, seed=91)
    async with FakePOP3Server(box, user="u", password="pw") as server:
        spec = migrating_spec(server)
        assert (await poll_account(spec, store)).recorded == 3
        await deliver_all(store)
        server.commands_seen.clear()
        writes: list[str] = []
        real_forget = store.forget_missing

        async def counting(account: str, present: object) -> int:
            writes.append(account)
            return await real_forget(account, present)  # type: ignore[arg-type]

        store.forget_missing = counting  # type: ignore[method-assign]
        idle = await poll_account(spec, store)
        assert (idle.new, idle.recorded, idle.pruned) == (0, 0, 0)
        verbs = [verb for verb, _ in server.commands_seen]
        assert "LIST" not in verbs and "RETR" not in verbs and "UIDL" in verbs
        assert writes == []
        # Someone else deletes a message: the next poll prunes its UIDL.
        gone = server.uidls[0]
        del server.mailbox[0]
        after = await poll_account(spec, store)
    assert after.pruned == 1 and writes == [spec.name]
    assert gone not in await store.seen_uidls(spec.name)

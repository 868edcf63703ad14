"""Delete mode on a server without UIDL (ids are header hashes, `bridge.mail.header_uid`).

Messages with the same four headers share an id; the poll keys the second `id#<fp>`, the third
`id#<fp>#2`, in mailbox order (`bridge.poller.listing`). Deleting the first of such a group
while a later one was not yet delivered moved that one onto the bare id, and the next poll
fetched and delivered it again under another webhook-id. Now a group leaves the server in one
QUIT, once every member of it is delivered.

Across the upgrade that made header ids one hash with the fingerprint, mail delivered under an
old id and not yet deleted was recorded as vanished and stayed on the server for good: it is
now DELE'd under its new id.
"""

from __future__ import annotations

import time

import pytest

from bridge import mail
from bridge.delivery.ids import msg_id_for
from bridge.poller.listing import Listing, deletable_now
from bridge.poller.poll import poll_account
from bridge.store import Store
from bridge.testing.fakepop3 import FakePOP3Server, Faults
from bridge.testing.samples import generate_messages
from tests.poller.test_header_ids_upgrade import legacy_header_uid
from tests.support.accounts import fake_account

# A cron mail without Message-ID and Date: every run has the same four headers.
RUN_1 = b"From: cron@example.org\r\nSubject: backup done\r\n\r\nrun 1\r\n"
RUN_2 = b"From: cron@example.org\r\nSubject: backup done\r\n\r\nrun 2\r\n"


async def deliver(store: Store, bodies: set[bytes]) -> None:
    """Mark delivered (2xx) the pending rows whose raw message is one of `bodies`."""
    for item in await store.claim_due(time.time() + 1, 100, "test", 60):
        if item.raw in bodies:
            await store.mark_delivered(item.id, 200, time.time())
        else:
            await store.mark_retry(item.id, time.time(), "not yet", None, time.time())


async def test_a_group_sharing_a_header_id_is_never_delivered_twice(store: Store) -> None:
    others = list(generate_messages(4, seed=190))  # keep the mailbox from looking migrated
    box = [RUN_1, RUN_2, *others]
    async with FakePOP3Server(box, user="u", password="pw", faults=Faults(no_uidl=True)) as srv:
        spec = fake_account(srv, "no-uidl", on_delivered="delete")
        first = await poll_account(spec, store, delete_wait=0)
        assert first.recorded == 6
        await deliver(store, {RUN_1})  # run 2 is still pending
        await poll_account(spec, store, delete_wait=0)
        assert RUN_1 in srv.mailbox  # held back: deleting it would move run 2 onto its id
        third = await poll_account(spec, store, delete_wait=0)
        assert third.recorded == 0  # nothing fetched twice
        await deliver(store, {RUN_2, *others})
        await poll_account(spec, store, delete_wait=0)
        assert srv.mailbox == []  # the group went in one QUIT, with the rest
        last = await poll_account(spec, store, delete_wait=0)
        assert last.recorded == 0
    assert await store.pending_count() == 0


def test_deletable_now_holds_a_member_while_a_later_one_waits() -> None:
    listing = Listing()
    listing.update({"a": 1, "a#f": 2, "b": 3, "a#f#2": 4})
    listing.groups = [["a", "a#f", "a#f#2"]]
    assert deletable_now(listing, {"a": 1, "b": 3}) == {"b": 3}
    assert deletable_now(listing, {"a#f#2": 4}) == {"a#f#2": 4}  # the last: nothing moves
    assert deletable_now(listing, {"a": 1, "a#f": 2, "a#f#2": 4}) == {
        "a": 1,
        "a#f": 2,
        "a#f#2": 4,
    }
    assert deletable_now({"a": 1}, {"a": 1}) == {"a": 1}  # no groups: a plain dict


async def test_mail_delivered_before_the_header_id_change_is_deleted_after_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = list(generate_messages(4, seed=183))
    mailbox = list(box)  # the server's, changed by its DELEs
    async with FakePOP3Server(mailbox, user="u", password="pw", faults=Faults(no_uidl=True)) as srv:
        spec = fake_account(srv, "no-uidl", on_delivered="delete")
        with monkeypatch.context() as old_release:
            old_release.setattr(mail, "header_uid", legacy_header_uid)
            before = await poll_account(spec, store, delete_wait=0)
            assert before.recorded == 4
        await deliver(store, set(box[:3]))  # the fourth is still pending at the upgrade

        after = await poll_account(spec, store, delete_wait=0)  # the upgrade
        assert after.recorded == 0  # nothing delivered twice
        assert after.deleted == 3 and srv.mailbox == box[3:]
        trail = await store.custody_trail(msg_id_for(spec.name, legacy_header_uid(box[0])))
        assert "deleted" in [e.event for e in trail]  # not "vanished": we deleted it
        await deliver(store, {box[3]})
        last = await poll_account(spec, store, delete_wait=0)
        assert last.recorded == 0
        assert srv.mailbox == []  # and the fourth, once delivered, under its re-keyed id
    assert await store.pending_count() == 0

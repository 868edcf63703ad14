"""A server without UIDL across the upgrade that made header-derived ids one hash with the
fingerprint (`bridge.mail.header_uid`): no mailbox is delivered again.

The ids older releases stored came from a hash of the client's own; `legacy_header_uid` below
is that formula, kept here only to make a store as those releases left it.
"""

from __future__ import annotations

import hashlib
import re
import time

import pytest

from bridge import mail
from bridge.poller.poll import poll_account
from bridge.store import Store
from bridge.testing.fakepop3 import FakePOP3Server, Faults
from bridge.testing.samples import generate_messages
from tests.support.accounts import fake_account

_LEGACY_HEADERS = (b"message-id", b"date", b"from", b"subject")


def legacy_header_uid(headers: bytes) -> str:
    """`bridge.pop3.client.header_uid` as released before the single header hash."""
    wanted: dict[bytes, bytes] = {}
    current: bytes | None = None
    for line in headers.replace(b"\r\n", b"\n").split(b"\n"):
        if not line:
            break
        if line[:1] in (b" ", b"\t") and current is not None:
            wanted[current] += b" " + line.strip()
            continue
        name, sep, value = line.partition(b":")
        key = name.strip().lower()
        current = key if sep and key in _LEGACY_HEADERS and key not in wanted else None
        if current is not None:
            wanted[current] = value.strip()
    digest = hashlib.sha256()
    for key in _LEGACY_HEADERS:
        value = re.sub(rb"\s+", b" ", wanted.get(key, b"")).strip()
        digest.update(key + b":" + value + b"\n")
    return "hdr-" + digest.hexdigest()


async def deliver_all(store: Store) -> list[str]:
    items = await store.claim_due(time.time() + 1, 10_000, "test", 60)
    for item in items:
        await store.mark_delivered(item.id, 200, time.time())
    return [item.uidl for item in items]


async def test_no_mailbox_is_delivered_again_after_the_header_id_change(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = generate_messages(5, seed=181)
    async with FakePOP3Server(box, user="u", password="pw", faults=Faults(no_uidl=True)) as srv:
        spec = fake_account(srv, "no-uidl", connect_timeout=30.0, read_timeout=120.0)
        with monkeypatch.context() as old_release:
            old_release.setattr(mail, "header_uid", legacy_header_uid)
            before = await poll_account(spec, store)
        assert before.recorded == 5
        delivered = await deliver_all(store)
        assert all(u.startswith("hdr-") for u in delivered)
        assert set(delivered).isdisjoint({mail.header_uid(m) for m in box})  # the ids changed

        # The upgrade, plus one message that arrived meanwhile.
        srv.mailbox.append(generate_messages(1, seed=182)[0])
        after = await poll_account(spec, store)
        assert (after.rekeyed, after.recorded) == (5, 1)
        [new] = await deliver_all(store)
        assert new == mail.header_uid(srv.mailbox[-1])

        # And from then on the new ids are simply seen: nothing moves.
        again = await poll_account(spec, store)
        assert (again.rekeyed, again.recorded) == (0, 0)
    assert await store.seen_uidls(spec.name) >= {mail.header_uid(m) for m in srv.mailbox}


def test_header_uid_is_the_fingerprint() -> None:
    headers = b"Message-ID: <a@x>\r\nSubject:  two\r\n folded\r\n\r\n"
    assert mail.header_uid(headers) == "hdr-" + mail.fingerprint(headers)
    assert len(mail.header_uid(headers)) <= 70  # RFC 1939 §7: a UIDL is at most 70 chars
    # Folding and white-space runs do not change it; what TOP n 0 and RETR give agree.
    assert mail.header_uid(b"Subject: two folded\r\nMessage-ID: <a@x>\r\n\r\n") == (
        mail.header_uid(headers)
    )
    assert mail.header_uid(headers + b"body\r\n") == mail.header_uid(headers)

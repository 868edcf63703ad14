"""The fetch stage builds most rows without `account_outbox_row`'s dispatch
(`deferred_account_row`); the row must be the one that dispatch gives, field for field, for
every account setting that reaches it, with the parse pool running or not."""

from __future__ import annotations

import dataclasses

import pytest

from bridge import mail
from bridge.outbox import ParsePool, current_pool, parsed_at_fetch
from bridge.poller.fetch import account_outbox_row, deferred_account_row
from bridge.poller.spec import AccountSpec, FetchOptions
from bridge.testing.samples import generate_messages
from tests.attachments.support import minter

BASE = AccountSpec(name="acct", host="h", username="u", webhook="main")
OPTIONS = mail.MailOptions(
    mailbox_hash_separator="-", trusted_authserv_ids=("mx.example",), trust_spam_headers=True
)
SPECS = {
    "defaults": BASE,
    "delete after delivery": dataclasses.replace(BASE, on_delivered="delete"),
    "own payload options": dataclasses.replace(BASE, fetch=FetchOptions(options=OPTIONS)),
    "delivery format": dataclasses.replace(BASE, fetch=FetchOptions(reshaped=True)),
    "links, big limit": dataclasses.replace(
        BASE, fetch=FetchOptions(links=minter(), attachment_inline_limit=1 << 20)
    ),
    "include raw": dataclasses.replace(BASE, fetch=FetchOptions(include_raw=True)),
}
MESSAGES = [
    *generate_messages(24, seed=11),
    b"Subject: no blank line, no Message-ID",
    b"Message-ID:\r\n <folded@x>\r\nSubject: a\rb\r\n\r\nbody\r\n",  # not a plain block
]


async def _check(spec: AccountSpec) -> None:
    for n, raw in enumerate(MESSAGES):
        fetch = spec.fetch
        assert not parsed_at_fetch(
            len(raw),
            attachment_inline_limit=fetch.attachment_inline_limit,
            links=fetch.links is not None,
            defer_any_size=fetch.reshaped,
        )
        uidl = f"uid-{n}"
        built = deferred_account_row(spec, uidl, raw, "s-1")
        dispatched = await account_outbox_row(
            spec, uidl, len(raw), raw, oversize=False, now=1.0, defer=True, session="s-1"
        )
        assert built == dispatched
        # And the keys are what the separate scans give.
        assert built.fingerprint == mail.fingerprint(raw)
        assert built.message_id == mail.message_id(raw)


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
async def test_the_fetch_row_is_the_dispatched_row(spec: AccountSpec) -> None:
    await _check(spec)


async def test_the_same_with_a_parse_pool() -> None:
    pool = ParsePool(1)  # the process's pool while open: `isolated_row` then dispatches to it
    try:
        assert current_pool() is pool
        for spec in SPECS.values():
            await _check(spec)
    finally:
        pool.close()

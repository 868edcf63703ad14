"""The fetch stage builds most rows without `account_outbox_row`'s dispatch
(`deferred_account_rows`); the row must be the one that dispatch gives, field for field, for
every account setting that reaches it, with the parse pool running or not."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import mail
from bridge.outbox import ParsePool, current_pool, parsed_at_fetch, parsed_from
from bridge.poller.fetch import account_outbox_row, deferred_account_rows
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
        built = deferred_account_rows(spec, "s-1")(uidl, raw, len(raw))
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


@settings(max_examples=2000, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=3 << 20),
    limit=st.integers(min_value=-5, max_value=3 << 20) | st.sampled_from([0, 1, 2, 3, 1 << 21]),
    links=st.booleans(),
    defer_any_size=st.booleans(),
)
def test_the_fetch_threshold_is_parsed_at_fetch(
    size: int, limit: int, links: bool, defer_any_size: bool
) -> None:
    # The fetch compares each size with `parsed_from` instead of calling `parsed_at_fetch`.
    settings_ = {
        "attachment_inline_limit": limit,
        "links": links,
        "defer_any_size": defer_any_size,
    }
    assert (size >= parsed_from(**settings_)) == parsed_at_fetch(size, **settings_)


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_a_session_row_builder_gives_the_one_row(spec: AccountSpec) -> None:
    rows = deferred_account_rows(spec, "s-1")
    for n, raw in enumerate(MESSAGES):
        uidl = f"uid-{n}"
        assert rows(uidl, raw, len(raw)) == deferred_account_rows(spec, "s-1")(uidl, raw, len(raw))

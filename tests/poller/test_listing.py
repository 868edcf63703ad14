"""`bridge.poller.listing` directly: the rules a UIDL answer is held to before a poll trusts it
(tests/security/test_hostile_listing.py runs the same rules against hostile servers)."""

from __future__ import annotations

import pytest

from bridge.poller.listing import checked_listing, storable_uid
from bridge.pop3.errors import RemoteProtocolError


def test_storable_uids_keep_what_stores_already_hold() -> None:
    for uid in ("abc", "with space", "ünïcode-ok", "x" * 200):
        assert storable_uid(uid) == uid


def test_unstorable_uids_become_their_escaped_bytes_the_same_every_time() -> None:
    not_utf8 = b"\xff\xfe".decode("utf-8", "surrogateescape")
    assert storable_uid(not_utf8) == "x-uidl:%FF%FE" == storable_uid(not_utf8)
    assert storable_uid("ctl\x01id") == "x-uidl:ctl%01id"
    assert storable_uid("tab\tok") == "tab\tok"  # HT is text a store keeps


async def no_fingerprints(pairs: list[tuple[int, str]]) -> list[tuple[str, str]]:
    raise AssertionError(f"asked for fingerprints of {pairs} with no repeated id")


async def test_a_clean_listing_maps_each_uid_to_its_number() -> None:
    listing = await checked_listing([(1, "a"), (2, "b"), (3, "c")], 3, "acct", no_fingerprints)
    assert listing == {"a": 1, "b": 2, "c": 3}


@pytest.mark.parametrize(
    ("entries", "count", "match"),
    [
        ([(1, "a"), (2, "b")], 1, "lists message 2 but STAT counted 1"),
        ([(0, "a")], 1, "lists message 0 but STAT counted 1"),
        ([(1, "a"), (1, "b")], 2, "lists message 1 more than once"),
    ],
)
async def test_numbers_outside_stat_or_repeated_are_a_protocol_error(
    entries: list[tuple[int, str]], count: int, match: str
) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        await checked_listing(entries, count, "acct", no_fingerprints)


async def test_repeated_uids_are_keyed_by_header_fingerprint_and_all_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    asked: list[list[tuple[int, str]]] = []

    async def fingerprints(pairs: list[tuple[int, str]]) -> list[tuple[str, str]]:
        asked.append(pairs)
        return [(uid, "f" * 64 if n == 4 else "0123456789abcdef" * 4) for n, uid in pairs]

    entries = [(1, "same"), (2, "same"), (3, "same"), (4, "same"), (5, "other")]
    listing = await checked_listing(entries, 5, "acct", fingerprints)
    assert asked == [[(2, "same"), (3, "same"), (4, "same")]]  # once, for the repeats only
    assert listing == {
        "same": 1,
        "same#0123456789abcdef": 2,
        "same#0123456789abcdef#2": 3,  # identical headers too: a counter keeps them apart
        "same#ffffffffffffffff": 4,
        "other": 5,
    }
    assert "3 message(s) a UIDL another message has" in caplog.text

"""The freshness canary's pure parts: the message, recognition (forgery-proof), the tracker."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bridge.poller.canary import (
    HEADER,
    CanaryKey,
    CanaryOptions,
    Tracker,
    _header_block,
    canary_message,
    find_canary,
)

KEY = CanaryKey.derive(["whsec_one"])
OPTS = CanaryOptions(url="lmtp://127.0.0.1:24", to="me@example.com")


def test_a_canary_is_recognised_with_its_submission_time() -> None:
    raw, nonce = canary_message("acct", KEY, OPTS, now=1_700_000_000.25)
    found = find_canary(raw, "acct", KEY)
    assert found is not None
    assert found.nonce == nonce
    assert found.submitted_at == pytest.approx(1_700_000_000.25, abs=0.001)
    assert b"Auto-Submitted: auto-generated" in raw


def test_ordinary_mail_is_not_a_canary() -> None:
    assert find_canary(b"Subject: hi\r\n\r\nbody\r\n", "acct", KEY) is None


def test_a_forged_or_foreign_canary_is_delivered_as_mail(caplog: pytest.LogCaptureFixture) -> None:
    raw, _ = canary_message("acct", KEY, OPTS, now=1000.0)
    # Another account's canary, a canary tagged with another key, a tampered time.
    assert find_canary(raw, "other", KEY) is None
    assert find_canary(raw, "acct", CanaryKey.derive(["whsec_two"])) is None
    tampered = raw.replace(f"{HEADER}: 1000000.".encode(), f"{HEADER}: 1000001.".encode())
    assert tampered != raw
    assert find_canary(tampered, "acct", KEY) is None
    assert any("does not verify" in r.getMessage() for r in caplog.records)


def test_the_header_counts_only_in_the_header_block() -> None:
    raw, _ = canary_message("acct", KEY, OPTS, now=1000.0)
    head, _, _ = raw.partition(b"\r\n\r\n")
    field = next(line for line in head.split(b"\r\n") if line.startswith(HEADER.encode()))
    quoted = b"Subject: fwd\r\n\r\n" + field + b"\r\n"
    assert find_canary(quoted, "acct", KEY) is None


# The header block as `find_canary` cut it before its search started from the LF (`\r?` first
# made the regex try every octet): kept here as the reference the faster cut must equal.
_OLD_END = re.compile(rb"\r?\n\r?\n")


def _old_header_block(raw: bytes) -> bytes:
    end = _OLD_END.search(raw)
    return raw if end is None else raw[: end.start() + 1]


_PIECES = [b"\r", b"\n", b"\r\n", b"\n\r", b"a", b"Subject: x", f"{HEADER}: ".encode(), b" "]


@given(st.lists(st.sampled_from(_PIECES), max_size=40).map(b"".join))
@example(b"\n\n")
@example(b"\r\n\r\n")
@example(b"\r\n\n")
@example(b"\n\r\n")
@example(b"\r\r\n\n")
@example(b"a\r\n\rb\n\n")
def test_the_header_block_is_cut_where_it_was(raw: bytes) -> None:
    assert _header_block(raw) == _old_header_block(raw)


@given(
    st.lists(st.sampled_from([b"\r\n", b"\n", b"\r\r\n"]), min_size=12, max_size=12),
    st.integers(0, 11),
    st.sampled_from([b"\r\n", b"\n", b"\r\n\r\n", b"\n\r\n", b"\r\n\n", b""]),
)
def test_canaries_are_found_as_before_whatever_the_line_ends(
    ends: list[bytes], blank_after: int, blank: bytes
) -> None:
    """Every line of a canary rewritten with its own line end, and a blank line (or not)
    inserted after one of them: recognised exactly when the old cut kept the field."""
    raw, nonce = canary_message("acct", KEY, OPTS, now=1000.0)
    lines = raw.split(b"\r\n")[:12]
    rewritten = b"".join(
        line + end + (blank if i == blank_after else b"")
        for i, (line, end) in enumerate(zip(lines, ends, strict=True))
    )
    old_head = _old_header_block(rewritten)
    found = find_canary(rewritten, "acct", KEY)
    assert _header_block(rewritten) == old_head
    in_block = re.search(
        rb"(?im)^X-Pop3bridge-Canary:[ \t]*\d+\.[0-9a-f]{32}\.[0-9a-f]{64}[ \t]*\r?$", old_head
    )
    assert (found is not None and found.nonce == nonce) == (in_block is not None)


def test_rotation_keys_all_verify() -> None:
    old = CanaryKey.derive(["whsec_old"])
    raw, _ = canary_message("acct", old, OPTS, now=1000.0)
    rotated = CanaryKey.derive(["whsec_new", "whsec_old"])
    assert find_canary(raw, "acct", rotated) is not None


def test_tracker_ages_counts_once_and_is_due_by_interval() -> None:
    t = Tracker(clock=lambda: 0.0)
    assert t.due("a", 900, now=0)
    raw, nonce = canary_message("a", KEY, OPTS, now=100.0)
    t.submitted("a", nonce, 100.0)
    assert not t.due("a", 900, now=500)
    assert t.due("a", 900, now=1000)
    st = t.state("a")
    assert st.age(160.0) == 60.0
    found = find_canary(raw, "a", KEY)
    assert found is not None
    assert t.fetched("a", found, 112.5) == pytest.approx(12.5)
    assert st.age(500.0) == 0.0
    # The same canary fetched again (its session's QUIT did not commit): not counted twice.
    assert t.fetched("a", found, 200.0) is None
    assert st.last_round_trip == pytest.approx(12.5)

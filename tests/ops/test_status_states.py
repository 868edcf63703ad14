"""Per-account and overall states, and the last hour's deliveries, from the status registry."""

from __future__ import annotations

import pytest

from bridge.ops.status import FAILING_AFTER, StatusRegistry, account_state, overall_state

NOW = 1_800_000_000.0


def test_states_in_order_of_what_needs_a_person_first() -> None:
    assert account_state({"consecutive_failures": 0}) == ("ok", "")
    assert account_state({"needs_reauth": "re-authorise", "consecutive_failures": 9})[0] == (
        "needs re-authorisation"
    )
    failing = {"consecutive_failures": FAILING_AFTER, "last_success_at": NOW, "last_error": "x"}
    assert account_state(failing)[0] == "failing"
    never = {"consecutive_failures": 1, "last_success_at": None, "last_error": "Auth"}
    assert account_state(never)[0] == "failing"
    stale = {"consecutive_failures": 0, "canary": {"state": "stale"}}
    assert account_state(stale)[0] == "canary stale"
    assert account_state({"consecutive_failures": 1, "last_success_at": NOW})[0] == "degraded"
    assert account_state({"dead": 2})[0] == "degraded"
    assert account_state({"oldest_pending_age": 3600})[0] == "degraded"
    assert account_state({"oldest_pending_age": 5})[0] == "ok"


@pytest.mark.parametrize(
    ("states", "overall"),
    [
        ([], "ok"),
        (["ok", "ok"], "ok"),
        (["ok", "failing", "failing"], "degraded"),  # two of three fail: not "ok", not "ready"
        (["failing", "needs re-authorisation"], "failing"),
        (["canary stale"], "degraded"),
    ],
)
def test_overall_state(states: list[str], overall: str) -> None:
    assert overall_state(states) == overall


def test_last_hour_of_deliveries_per_minute_and_percentiles() -> None:
    reg = StatusRegistry()
    reg.poll_succeeded("a", new=3, now=NOW)
    reg.delivered("a", 0.010, now=NOW - 3700)  # older than an hour: dropped
    for _ in range(99):
        reg.delivered("a", 0.010, now=NOW - 30)  # this minute
    reg.delivered("a", 2.5, now=NOW - 90)  # one minute ago
    entry = reg.snapshot(NOW)["a"]
    assert entry["delivered_last_hour"] == 100
    assert entry["history"][-1] == 99 and entry["history"][-2] == 1 and sum(entry["history"]) == 100
    assert entry["latency_p50"] == pytest.approx(0.010)
    assert entry["latency_p99"] == pytest.approx(0.010)
    reg.delivered("a", 3.0, now=NOW - 10)
    assert reg.snapshot(NOW)["a"]["latency_p99"] == pytest.approx(2.5)
    assert "deliveries" not in entry and entry["state"] == "ok"


def test_the_page_shows_last_poll_and_last_new_mail_that_status_has() -> None:
    from bridge.ops.page import render_page

    reg = StatusRegistry()
    reg.poll_succeeded("a", new=2, now=NOW - 600)
    reg.poll_succeeded("a", new=0, now=NOW - 30)  # a later empty poll keeps "last new mail"
    reg.poll_failed("a", "ConnectionLost: refused", now=NOW - 5)
    doc = {"state": "degraded", "accounts": reg.snapshot(NOW)}
    entry = doc["accounts"]["a"]
    assert (entry["last_new_at"], entry["last_new"], entry["last_poll_at"]) == (
        NOW - 600,
        0,
        NOW - 5,
    )
    page = render_page(doc, True, {}, now=NOW)
    assert "1 failed in a row" in page
    assert "last poll 5 s ago, 0 new" in page and "last new mail 10 min ago" in page

"""The retry schedule: full-jitter windows, limits, Retry-After, permanent failures."""

from __future__ import annotations

import email.utils
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.delivery.policy import RetryPolicy, is_permanent_status, parse_retry_after
from bridge.delivery.sender import DeliveryResult

NOW = 1_700_000_000.0


def failed(
    status: int | None = 500, retry_after: float | None = None, permanent: bool = False
) -> DeliveryResult:
    return DeliveryResult(False, status, retry_after, permanent, f"HTTP {status}", 0.01)


def test_default_schedule_windows() -> None:
    policy = RetryPolicy()
    windows = [policy.window(n) for n in range(1, policy.max_attempts)]
    assert windows[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(windows) == 3600.0
    # Worst case of the whole schedule: most of a day, not minutes and not weeks.
    assert 6 * 3600 < sum(windows) <= 24 * 3600


@settings(max_examples=50, deadline=None)
@given(
    initial=st.floats(0.1, 30),
    factor=st.floats(1, 10_000),
    attempts=st.integers(1, 60),
)
def test_windows_are_monotone_and_capped(initial: float, factor: float, attempts: int) -> None:
    policy = RetryPolicy(initial=initial, max_delay=initial * factor, max_attempts=100)
    assert policy.window(attempts) <= policy.window(attempts + 1) <= policy.max_delay
    assert policy.window(1) == pytest.approx(initial)


@pytest.mark.parametrize("attempts", [1, 3, 8, 20])
def test_full_jitter_stays_in_window_and_uses_all_of_it(attempts: int) -> None:
    policy = RetryPolicy()
    high = policy.window(attempts)
    delays = [policy.next_attempt(attempts, failed(), NOW) for _ in range(400)]
    offsets = [d - NOW for d in delays if d is not None]
    assert len(offsets) == 400
    assert all(0.0 <= o <= high for o in offsets)
    # Full jitter: spread over [0, high], not bunched at the top like "equal jitter".
    assert min(offsets) < 0.1 * high
    assert max(offsets) > 0.9 * high
    assert 0.35 * high < statistics.mean(offsets) < 0.65 * high


def test_dead_after_max_attempts_never_dropped_silently() -> None:
    policy = RetryPolicy(max_attempts=5)
    for n in range(1, 5):
        assert policy.next_attempt(n, failed(), NOW) is not None
    assert policy.next_attempt(5, failed(), NOW) is None
    assert policy.next_attempt(6, failed(None), NOW) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 415, 422])
def test_permanent_4xx_dead_letters_at_once(status: int) -> None:
    assert is_permanent_status(status)
    assert RetryPolicy().next_attempt(1, failed(status), NOW) is None


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504, None])
def test_transient_statuses_are_retried(status: int | None) -> None:
    assert not is_permanent_status(status)
    when = RetryPolicy().next_attempt(1, failed(status), NOW)
    assert when is not None and NOW <= when <= NOW + 1.0


def test_permanent_flag_from_sender_wins() -> None:
    # e.g. an invalid URL: no status, but the sender knows retrying is pointless.
    assert RetryPolicy().next_attempt(1, failed(None, permanent=True), NOW) is None


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_wins_over_jitter(status: int) -> None:
    policy = RetryPolicy()
    assert policy.next_attempt(1, failed(status, retry_after=120.0), NOW) == NOW + 120.0
    # Shorter than the jitter window is honoured too: the receiver knows best.
    assert policy.next_attempt(15, failed(status, retry_after=5.0), NOW) == NOW + 5.0


def test_retry_after_is_capped_and_ignored_on_other_statuses() -> None:
    policy = RetryPolicy(retry_after_cap=600.0)
    assert policy.next_attempt(1, failed(429, retry_after=10**9), NOW) == NOW + 600.0
    when = policy.next_attempt(1, failed(500, retry_after=300.0), NOW)
    assert when is not None and when <= NOW + 1.0


def test_retry_after_still_counts_toward_the_limit() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.next_attempt(3, failed(429, retry_after=1.0), NOW) is None


def test_give_up_after_counts_from_first_attempt() -> None:
    policy = RetryPolicy(give_up_after=3600.0, max_delay=3600.0)
    first = NOW - 3500.0
    when = policy.next_attempt(12, failed(), NOW, first_attempt_at=first)
    # The window is 2048 s but only 100 s remain: one last try at the deadline, not earlier.
    assert when is not None and NOW <= when <= first + 3600.0
    assert policy.next_attempt(12, failed(), NOW, first_attempt_at=NOW - 3600.0) is None


def test_success_is_not_a_retry_question() -> None:
    with pytest.raises(ValueError, match="succeeded"):
        RetryPolicy().next_attempt(1, DeliveryResult(True, 204, None, False, None, 0.0), NOW)


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"initial": 0}, {"initial": 10, "max_delay": 5}]
)
def test_invalid_policy_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_parse_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 0 ", NOW) == 0.0
    date = email.utils.formatdate(NOW + 90, usegmt=True)
    assert parse_retry_after(date, NOW) == pytest.approx(90.0, abs=1.0)
    past = email.utils.formatdate(NOW - 90, usegmt=True)
    assert parse_retry_after(past, NOW) == 0.0
    for junk in (None, "", "soon", "-5", "1.5e99x"):
        assert parse_retry_after(junk, NOW) is None

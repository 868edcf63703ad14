"""When to try a failed webhook delivery again, and when to give up (dead letter).

Pure: no clock, no I/O. The caller passes `now` and stores the returned absolute time, so the
schedule survives a restart (the store holds `attempts` and `next_attempt_at`, we hold only
the rules).

Default schedule (`RetryPolicy()`), with full jitter (AWS "Full Jitter", as implemented by
tenacity's `wait_random_exponential`): after failed attempt n the next try comes after a
uniformly random delay in [0, min(1 s * 2**(n-1), 1 h)]. The windows are 1 s, 2 s, 4 s, ...
34 min, then 1 h each; attempt 30 is the last. That spans about 9 h on average and at most
18 h, and `give_up_after` (24 h, counted from the first attempt when the caller passes
`first_attempt_at`) is the hard stop. Full jitter rather than fixed exponential steps because
after a receiver outage every pending message fails at once: fixed steps would bring them all
back in the same second, again and again.

`Retry-After` (429 and 503 only, as RFC 9110 defines it for those) replaces the jittered delay:
the receiver knows its own recovery time better than we do. It is capped (`retry_after_cap`,
default 6 h) so a broken header cannot park a message for a year, and it still counts as an
attempt. A permanent failure (4xx other than 408 Request Timeout, 409 Conflict, 425 Too Early,
429 Too Many Requests) is dead-lettered at once: retrying the same body cannot change the
answer, and a dead letter can be replayed after the receiver is fixed.
"""

from __future__ import annotations

import datetime
import email.utils
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import tenacity

__all__ = [
    "RETRY_AFTER_STATUSES",
    "TRANSIENT_4XX",
    "RetryPolicy",
    "is_permanent_status",
    "parse_retry_after",
]

# 4xx codes that describe a condition of the moment rather than a bad request.
TRANSIENT_4XX = frozenset({408, 409, 425, 429})
RETRY_AFTER_STATUSES = frozenset({429, 503})


def is_permanent_status(status: int | None) -> bool:
    """True for answers that retrying the same request cannot change."""
    return status is not None and 400 <= status < 500 and status not in TRANSIENT_4XX


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date), or None.

    A date in the past means "now" (0). Unparseable values are ignored rather than trusted.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less parse means the same
        when = when.replace(tzinfo=datetime.UTC)
    delay = when.timestamp() - now
    if not math.isfinite(delay):
        return None
    return max(0.0, delay)


class Outcome(Protocol):
    """What the policy reads from a `DeliveryResult` (kept structural so tests can fake it)."""

    @property
    def ok(self) -> bool: ...
    @property
    def status(self) -> int | None: ...
    @property
    def retry_after(self) -> float | None: ...
    @property
    def permanent(self) -> bool: ...


@dataclass(frozen=True)
class RetryPolicy:
    """`next_attempt(attempts, result, now)` -> absolute unix time of the next try, or None.

    `attempts` counts attempts made so far, including the one that produced `result` (so 1
    after the first failure).
    """

    max_attempts: int = 30
    initial: float = 1.0  # first jitter window, seconds
    max_delay: float = 3600.0  # largest jitter window, seconds
    give_up_after: float = 86400.0  # seconds since the first attempt (needs first_attempt_at)
    retry_after_cap: float = 6 * 3600.0
    # tenacity's strategies, made at the first failure: a run that only delivers (`once` to
    # its first POST) does not import tenacity (about 5 ms, `python -X importtime`).
    _waits: tuple[tenacity.wait_random_exponential, tenacity.wait_exponential] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not (self.initial > 0 and self.max_delay >= self.initial):
            raise ValueError(
                f"need 0 < initial <= max_delay, got initial={self.initial} "
                f"max_delay={self.max_delay}"
            )
        if self.give_up_after <= 0 or self.retry_after_cap < 0:
            raise ValueError("give_up_after must be positive and retry_after_cap not negative")

    def window(self, attempts: int) -> float:
        """Upper bound of the jittered delay after `attempts` attempts (non-decreasing)."""
        return self._strategies()[1](self._call_state(attempts))

    def delay(self, attempts: int) -> float:
        """A fresh full-jitter delay in [0, window(attempts)]."""
        return self._strategies()[0](self._call_state(attempts))

    def _strategies(self) -> tuple[tenacity.wait_random_exponential, tenacity.wait_exponential]:
        if self._waits is None:
            import tenacity

            waits = (
                tenacity.wait_random_exponential(multiplier=self.initial, max=self.max_delay),
                tenacity.wait_exponential(multiplier=self.initial, max=self.max_delay),
            )
            object.__setattr__(self, "_waits", waits)  # two threads may both build it: alike
            return waits
        return self._waits

    def next_attempt(
        self,
        attempts: int,
        result: Outcome,
        now: float,
        *,
        first_attempt_at: float | None = None,
    ) -> float | None:
        if result.ok:
            raise ValueError("next_attempt() is for failed deliveries; this one succeeded")
        if result.permanent or is_permanent_status(result.status):
            return None
        if attempts >= self.max_attempts:
            return None
        deadline = None if first_attempt_at is None else first_attempt_at + self.give_up_after
        if deadline is not None and now >= deadline:
            return None
        if result.status in RETRY_AFTER_STATUSES and result.retry_after is not None:
            wait = min(max(0.0, result.retry_after), self.retry_after_cap)
        else:
            wait = self.delay(attempts)
        when = now + wait
        if deadline is not None and when > deadline:
            # One last try at the deadline rather than giving up early.
            when = deadline
        return when

    @staticmethod
    def _call_state(attempts: int) -> tenacity.RetryCallState:
        # tenacity's wait strategies read only `attempt_number`; a fresh state per call keeps
        # the policy safe to share between tasks and threads.
        import tenacity

        state = tenacity.RetryCallState(_retrying(), None, (), {})
        state.attempt_number = max(1, attempts)
        return state


def _retrying() -> tenacity.Retrying:
    """Only a placeholder owner for the call states `RetryPolicy` builds; made once."""
    global _RETRYING
    if _RETRYING is None:
        import tenacity

        _RETRYING = tenacity.Retrying()
    return _RETRYING


_RETRYING: tenacity.Retrying | None = None

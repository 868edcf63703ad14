"""A small in-memory table of per-account status, for `/status` and the HTML page.

Feature code (the poller) writes to it; the ops server only reads a snapshot through the
callable it is handed. It imports nothing from feature packages so `ops` stays at the bottom.

States
------
Readiness (`/readyz`) says whether this process can do its job at all (its store answers).
The state says how the accounts are doing, which is what an operator asks first:

- per account, the first that applies: `needs re-authorisation` (an OAuth grant was revoked;
  only a person can fix it), `failing` (FAILING_AFTER consecutive failed polls, or never a
  successful one after a failure), `canary stale` (the mailbox path is broken even if polls
  succeed), `degraded` (a failed poll, dead letters, or a delivery pending longer than
  STUCK_AFTER), else `ok`;
- overall: `ok` when every account is ok, `failing` when every account is failing or needs
  re-authorisation, `degraded` otherwise (and `ok` with no accounts yet).

Deliveries of the last hour are kept per account as (time, seconds) pairs, bounded, for the
page's chart and latency percentiles; they are this process's own (each replica shows what it
delivered).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "FAILING_AFTER",
    "STUCK_AFTER",
    "AccountStatus",
    "StatusRegistry",
    "account_state",
    "overall_state",
]

FAILING_AFTER = 3
STUCK_AFTER = 600.0
HOUR = 3600.0
_MAX_HISTORY = 50_000  # deliveries kept per account (a busy hour); older ones drop off


@dataclass(slots=True)
class AccountStatus:
    last_poll_at: float | None = None
    last_success_at: float | None = None
    last_error: str | None = None
    last_new: int = 0
    last_new_at: float | None = None  # the last poll that found new mail
    consecutive_failures: int = 0
    pending: int = 0
    dead: int = 0
    oldest_pending_age: float | None = None
    # OAuth accounts: what a person must do after `invalid_grant`, and when the refresh token
    # expires (when the provider said).
    needs_reauth: str | None = None
    refresh_token_expires_at: float | None = None
    # Freshness canary, when configured: state (ok|stale|failing|waiting), age of the oldest
    # canary in flight, last round trip, when the last one was fetched, the last submit error.
    canary: dict[str, Any] | None = None
    # (unix time, seconds) of each delivery in the last hour, oldest first; not in snapshots.
    deliveries: collections.deque[tuple[float, float]] = field(
        default_factory=lambda: collections.deque(maxlen=_MAX_HISTORY)
    )


_SNAPSHOT_FIELDS = tuple(f.name for f in fields(AccountStatus) if f.name != "deliveries")


def account_state(entry: dict[str, Any]) -> tuple[str, str]:
    """(state, why) of one account's snapshot entry; see the module docstring."""
    failures = int(entry.get("consecutive_failures") or 0)
    canary = entry.get("canary") or {}
    if entry.get("needs_reauth"):
        return "needs re-authorisation", str(entry["needs_reauth"])
    if failures >= FAILING_AFTER or (failures and entry.get("last_success_at") is None):
        return "failing", f"{failures} polls in a row failed: {entry.get('last_error') or ''}"
    if isinstance(canary, dict) and canary.get("state") in ("stale", "failing"):
        return "canary stale", str(canary.get("last_error") or "the last canary has not arrived")
    if failures:
        return "degraded", f"the last poll failed: {entry.get('last_error') or ''}"
    if entry.get("dead"):
        return "degraded", f"{entry['dead']} dead letter(s) wait for replay"
    age = entry.get("oldest_pending_age")
    if isinstance(age, int | float) and age > STUCK_AFTER:
        return "degraded", f"a delivery has been pending for {age / 60:.0f} minutes"
    return "ok", ""


def overall_state(states: list[str]) -> str:
    if not states or all(s == "ok" for s in states):
        return "ok"
    if all(s in ("failing", "needs re-authorisation") for s in states):
        return "failing"
    return "degraded"


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class StatusRegistry:
    """Thread-safe because `pop3bridge` may run blocking store calls in worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, AccountStatus] = {}

    def _account(self, account: str) -> AccountStatus:
        """`account`'s entry, made at its first report (not built per call to be thrown away:
        every poll reports here). The caller holds the lock."""
        st = self._accounts.get(account)
        if st is None:
            st = self._accounts[account] = AccountStatus()
        return st

    def poll_succeeded(self, account: str, new: int, now: float | None = None) -> None:
        at = time.time() if now is None else now
        with self._lock:
            st = self._account(account)
            st.last_poll_at = st.last_success_at = at
            st.last_error = None
            st.last_new = new
            if new:
                st.last_new_at = at
            st.consecutive_failures = 0

    def poll_failed(self, account: str, error: str, now: float | None = None) -> None:
        with self._lock:
            st = self._account(account)
            st.last_poll_at = time.time() if now is None else now
            st.last_error = error
            st.consecutive_failures += 1

    def set_counts(
        self, account: str, *, pending: int, dead: int, oldest_pending_age: float | None = None
    ) -> None:
        with self._lock:
            st = self._account(account)
            st.pending, st.dead, st.oldest_pending_age = pending, dead, oldest_pending_age

    def set_oauth(
        self, account: str, *, needs_reauth: str | None, refresh_token_expires_at: float | None
    ) -> None:
        with self._lock:
            st = self._account(account)
            st.needs_reauth = needs_reauth
            st.refresh_token_expires_at = refresh_token_expires_at

    def set_canary(self, account: str, canary: dict[str, Any]) -> None:
        with self._lock:
            self._account(account).canary = canary

    def delivered(self, account: str, latency: float, now: float | None = None) -> None:
        at = time.time() if now is None else now
        with self._lock:
            self._account(account).deliveries.append((at, latency))

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._accounts)

    def snapshot(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Every account's status, with its state and the last hour's deliveries summarised:
        `delivered_last_hour`, `history` (60 per-minute counts, oldest first) and the latency
        percentiles `latency_p50` / `latency_p99` (seconds)."""
        at = time.time() if now is None else now
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for name, st in sorted(self._accounts.items()):
                while st.deliveries and st.deliveries[0][0] < at - HOUR:
                    st.deliveries.popleft()
                recent = list(st.deliveries)
                entry = {f: getattr(st, f) for f in _SNAPSHOT_FIELDS}
                history = [0] * 60
                for when, _ in recent:
                    minute = int((at - when) // 60)
                    if 0 <= minute < 60:
                        history[59 - minute] += 1
                latencies = [seconds for _, seconds in recent]
                entry["delivered_last_hour"] = len(recent)
                entry["history"] = history
                entry["latency_p50"] = _percentile(latencies, 0.5)
                entry["latency_p99"] = _percentile(latencies, 0.99)
                entry["state"], entry["state_reason"] = account_state(entry)
                out[name] = entry
        return out

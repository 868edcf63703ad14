"""A small in-memory table of per-account status, for `/status` and the HTML page.

Feature code (the poller) writes to it; the ops server only reads a snapshot through the
callable it is handed. It imports nothing from feature packages so `ops` stays at the bottom.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["AccountStatus", "StatusRegistry"]


@dataclass(slots=True)
class AccountStatus:
    last_poll_at: float | None = None
    last_success_at: float | None = None
    last_error: str | None = None
    last_new: int = 0
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


class StatusRegistry:
    """Thread-safe because `pop3bridge` may run blocking store calls in worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, AccountStatus] = {}

    def poll_succeeded(self, account: str, new: int, now: float | None = None) -> None:
        at = time.time() if now is None else now
        with self._lock:
            st = self._accounts.setdefault(account, AccountStatus())
            st.last_poll_at = st.last_success_at = at
            st.last_error = None
            st.last_new = new
            st.consecutive_failures = 0

    def poll_failed(self, account: str, error: str, now: float | None = None) -> None:
        with self._lock:
            st = self._accounts.setdefault(account, AccountStatus())
            st.last_poll_at = time.time() if now is None else now
            st.last_error = error
            st.consecutive_failures += 1

    def set_counts(
        self, account: str, *, pending: int, dead: int, oldest_pending_age: float | None = None
    ) -> None:
        with self._lock:
            st = self._accounts.setdefault(account, AccountStatus())
            st.pending, st.dead, st.oldest_pending_age = pending, dead, oldest_pending_age

    def set_oauth(
        self, account: str, *, needs_reauth: str | None, refresh_token_expires_at: float | None
    ) -> None:
        with self._lock:
            st = self._accounts.setdefault(account, AccountStatus())
            st.needs_reauth = needs_reauth
            st.refresh_token_expires_at = refresh_token_expires_at

    def set_canary(self, account: str, canary: dict[str, Any]) -> None:
        with self._lock:
            self._accounts.setdefault(account, AccountStatus()).canary = canary

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._accounts)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: asdict(st) for name, st in sorted(self._accounts.items())}

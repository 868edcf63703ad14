"""What the delivery worker logs: one INFO summary per interval, each attempt at DEBUG.

Why a summary and not a line per delivery: a JSON log line costs about 0.2 ms of CPU here
(every string is redacted, see `bridge.ops.logging`), against about 0.7 ms for the whole of a
message's fetch, parse and delivery (BENCHMARKS.md), so a line per message would cost a
quarter of the poller's throughput. The per-attempt lines (account, uidl, webhook-id, status,
milliseconds) are still written, at DEBUG, for successes and retries alike: failures are not
louder than successes. A dead letter is the exception: it ends a message's road and needs a
person, so it stays one ERROR line each (the worker writes it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["SUMMARY_INTERVAL", "DeliverySummary"]

log = logging.getLogger("bridge.delivery.worker")

SUMMARY_INTERVAL = 10.0  # seconds between summaries while deliveries happen


class DeliverySummary:
    """Counts attempt outcomes and logs them at most once per `interval`.

    `attempt(...)` after every attempt; `flush()` when work stops (end of `once`, shutdown).
    Nothing is logged for an interval without attempts.
    """

    def __init__(
        self,
        interval: float = SUMMARY_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._monotonic = monotonic
        self._since = monotonic()
        self._reset()

    def _reset(self) -> None:
        self.delivered = 0
        self.retry = 0
        self.dead = 0
        self._ms_total = 0.0
        self._ms_max = 0.0
        self._timed = 0
        self._accounts: set[str] = set()
        self._last_error: str | None = None

    def attempt(
        self,
        outcome: str,
        *,
        account: str,
        uidl: str,
        msg_id: str,
        webhook: str,
        status: int | None,
        ms: float | None,
        error: str | None = None,
    ) -> None:
        if outcome == "delivered":
            self.delivered += 1
        elif outcome == "retry":
            self.retry += 1
        else:
            self.dead += 1
        if error:
            self._last_error = error
        self._accounts.add(account)
        if ms is not None:
            self._ms_total += ms
            self._ms_max = max(self._ms_max, ms)
            self._timed += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "delivery attempt: %s",
                outcome,
                extra={
                    "account": account,
                    "uidl": uidl,
                    "msg_id": msg_id,
                    "webhook": webhook,
                    "status": status,
                    "ms": ms,
                    "outcome": outcome,
                    "error": error,
                },
            )
        self.tick()

    def tick(self) -> None:
        """Flush if the interval is over (the worker also calls it while idle)."""
        if self._monotonic() - self._since >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Log the summary of the attempts since the last one (if any), and start anew."""
        now = self._monotonic()
        seconds, self._since = now - self._since, now
        if not (self.delivered or self.retry or self.dead):
            return
        extra: dict[str, Any] = {
            "delivered": self.delivered,
            "retry": self.retry,
            "dead": self.dead,
            "accounts": len(self._accounts),
            "seconds": round(seconds, 1),
        }
        if self._timed:
            extra["ms_avg"] = round(self._ms_total / self._timed, 1)
            extra["ms_max"] = round(self._ms_max, 1)
        if self._last_error:
            extra["last_error"] = self._last_error
        log.info(
            "deliveries: %d delivered, %d to retry later, %d dead-lettered in %.1f s",
            self.delivered,
            self.retry,
            self.dead,
            seconds,
            extra=extra,
        )
        self._reset()

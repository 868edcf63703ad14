"""The delivery worker's log: an INFO summary per interval, every attempt at DEBUG."""

from __future__ import annotations

import logging

import pytest

from bridge.delivery.summary import DeliverySummary


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def attempt(summary: DeliverySummary, outcome: str, n: int, **kw: object) -> None:
    summary.attempt(
        outcome,
        account=f"acct{n % 2}",
        uidl=f"u{n}",
        msg_id=f"msg_{n}",
        webhook="main",
        status=kw.get("status", 204),  # type: ignore[arg-type]
        ms=float(n),
        error=kw.get("error"),  # type: ignore[arg-type]
    )


def test_one_info_summary_per_interval_and_each_attempt_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    summary = DeliverySummary(interval=10, monotonic=clock)
    caplog.set_level(logging.DEBUG, logger="bridge.delivery.worker")
    for n in range(1, 5):
        attempt(summary, "delivered", n)
    attempt(summary, "retry", 5, status=503, error="HTTP 503; retry in 2.0s")
    assert [r.levelno for r in caplog.records] == [logging.DEBUG] * 5
    debug = caplog.records[0]
    assert (debug.account, debug.uidl, debug.msg_id, debug.status, debug.ms) == (  # type: ignore[attr-defined]
        "acct1",
        "u1",
        "msg_1",
        204,
        1.0,
    )
    clock.now += 10
    attempt(summary, "delivered", 6)  # the interval is over: this one flushes
    info = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == 1
    r = info[0]
    assert (r.delivered, r.retry, r.dead, r.accounts) == (5, 1, 0, 2)  # type: ignore[attr-defined]
    assert (r.ms_avg, r.ms_max, r.last_error) == (3.5, 6.0, "HTTP 503; retry in 2.0s")  # type: ignore[attr-defined]
    assert "5 delivered, 1 to retry later, 0 dead-lettered" in r.getMessage()


def test_flush_without_attempts_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    summary = DeliverySummary(interval=10, monotonic=Clock())
    caplog.set_level(logging.DEBUG, logger="bridge.delivery.worker")
    summary.flush()
    summary.tick()
    assert caplog.records == []

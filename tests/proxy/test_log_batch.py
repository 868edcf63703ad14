"""A batch of exchange records counts and logs exactly as the records one by one would."""

from __future__ import annotations

import logging

import pytest

from bridge.ops import metrics
from bridge.proxy.log import SessionLog
from bridge.proxy.relay import Exchange


def _commands(verb: str, outcome: str) -> float:
    labels = {"verb": verb, "outcome": outcome}
    return metrics.REGISTRY.get_sample_value("pop3bridge_proxy_commands_total", labels) or 0.0


def _denied(verb: str) -> float:
    name = "pop3bridge_proxy_denied_commands_total"
    return metrics.REGISTRY.get_sample_value(name, {"verb": verb}) or 0.0


def test_a_batch_counts_and_logs_like_single_records(caplog: pytest.LogCaptureFixture) -> None:
    batch = [
        Exchange("RETR", ("1",), "ok", None, 10, 0.001, False),
        Exchange("RETR", ("2",), "ok", None, 10, 0.001, False),
        Exchange("DELE", ("1",), "denied", None, 42, 0.0, True),
        Exchange("XTND", ("x",), "unknown", None, 20, 0.0, True),
        Exchange("RETR", ("3",), "err", "SYS/TEMP", 8, 0.001, False),
        Exchange("-", (), "bad", None, 30, 0.0, True, "nul"),
    ]
    keys = [("RETR", "ok"), ("RETR", "err"), ("DELE", "denied"), ("OTHER", "error")]
    before = {key: _commands(*key) for key in keys}
    denied = _denied("DELE")
    slog = SessionLog("s-1", "127.0.0.1:1", "plain")
    with caplog.at_level(logging.INFO, logger="bridge.proxy"):
        slog.exchanges(batch)
    after = {key: _commands(*key) - before[key] for key in keys}
    assert after == {
        ("RETR", "ok"): 2,
        ("RETR", "err"): 1,
        ("DELE", "denied"): 1,
        ("OTHER", "error"): 2,  # an unknown verb and a bad line
    }
    assert _denied("DELE") - denied == 1
    assert slog.commands == len(batch)
    lines = [r for r in caplog.records if r.getMessage() == "proxy command"]
    assert [(r.verb, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("RETR", "ok"),
        ("RETR", "ok"),
        ("DELE", "denied"),
        ("OTHER", "unknown"),
        ("RETR", "err"),
        ("-", "bad"),
    ]

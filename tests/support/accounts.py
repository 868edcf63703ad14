"""The poller's view of a fake server: one `AccountSpec` builder instead of one per test file."""

from __future__ import annotations

from typing import Any

from bridge.poller.spec import AccountSpec
from bridge.testing.fakepop3 import FakePOP3Server

__all__ = ["fake_account"]


def fake_account(server: FakePOP3Server, name: str = "acct", **overrides: Any) -> AccountSpec:
    """An account that polls `server` with its own credentials over plain TCP (the fake speaks
    TLS only when given a context, and these tests are about POP3, not TLS). Timeouts are
    short but far above what a passing test needs; `overrides` replace any field."""
    values: dict[str, Any] = {
        "name": name,
        "host": server.host,
        "port": server.port,
        "tls": "none",
        "username": server.user,
        "password": server.password,
        "allow_plaintext": True,
        "webhook": "main",
        "connect_timeout": 5.0,
        "read_timeout": 10.0,
    }
    values.update(overrides)
    return AccountSpec(**values)

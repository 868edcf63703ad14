"""End-to-end harness: the suite's webhook receiver as a fixture, and config files for the CLI.

`Receiver` is `tests.support.receiver.ThreadedReceiver` (the one verifying receiver, on its own
thread so a test can block on subprocesses): ``receiver.delivered`` (2xx answers),
``receiver.delivered_ids``, ``receiver.verified``, ``receiver.invalid``, ``receiver.fail_next(n,
status=500)``, ``receiver.stop()`` / ``receiver.start()`` on the same port.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.receiver import ThreadedReceiver as Receiver
from tests.support.receiver import new_secret

__all__ = ["Receiver", "dovecot_account", "new_secret", "receiver", "write_config"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A started `Receiver`, stopped after the test (import it where a test needs one)."""
    with Receiver() as r:
        yield r


def write_config(
    path: Path,
    *,
    db: Path,
    receiver: Receiver,
    accounts: list[dict[str, Any]],
    poller: dict[str, Any] | None = None,
    webhook: dict[str, Any] | None = None,
) -> Path:
    config = {
        "state": {"url": f"sqlite:///{db}"},
        "webhooks": [
            {
                "name": "main",
                "url": receiver.url,
                "secret": receiver.secret,
                "timeout": 5,
                **(webhook or {}),
            }
        ],
        "accounts": accounts,
        "poller": {"jitter": 0.1, "shutdown_grace": 5, **(poller or {})},
        "ops": {"enabled": False},
        "logging": {"format": "json", "level": "INFO"},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def dovecot_account(dovecot: Any, user: Any, **extra: Any) -> dict[str, Any]:
    return {**dovecot.pop3s_account(user), "poll_interval": 1, **extra}

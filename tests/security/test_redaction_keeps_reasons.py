"""Regression (found reading the soak's log): a refused login was logged as "PASS ***", because
the PASS pattern took the client's own message "PASS refused by <host>: [IN-USE] ..." for a
command and scrubbed the server's reason with it. Secrets must go; reasons must stay."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.ops.logging import clear_secrets, redact, register_secret


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    clear_secrets()
    yield
    clear_secrets()


@pytest.mark.parametrize(
    "prose",
    [
        "PASS refused by 127.0.0.1: [IN-USE] maildrop is locked by another session",
        "PASS refused by mail.example.com: [SYS/TEMP] try again later",
        "poll deferred by the server, next try in 5s: PASS refused by h: [LOGIN-DELAY] wait",
    ],
)
def test_the_servers_reason_for_a_refused_pass_survives(prose: str) -> None:
    assert redact(prose) == prose


def test_pass_commands_are_still_scrubbed() -> None:
    assert redact("sent PASS hunter2 secret") == "sent PASS ***"
    assert redact("b'PASS refused-not-really'") == "b'PASS ***'"
    # A password that happens to begin with the prose words is still a registered secret.
    register_secret("refused by design 42")
    assert "refused by design 42" not in redact("PASS refused by design 42")

"""Poller fixtures: an account spec for a Dovecot user (the `store` fixture is project-wide)."""

from __future__ import annotations

from bridge.poller.spec import AccountSpec
from tests.support.dovecot import DovecotServer, DovecotUser


def dovecot_spec(dovecot: DovecotServer, user: DovecotUser, **overrides: object) -> AccountSpec:
    values: dict[str, object] = {
        **dovecot.pop3s_account(user),
        "connect_timeout": 10.0,
        "read_timeout": 10.0,
        **overrides,
    }
    return AccountSpec(**values)  # type: ignore[arg-type]

"""Outbox rows as the delivery worker claims them, for tests of the parse pool."""

from __future__ import annotations

from bridge.store.base import OutboxItem, deferred_payload

T0 = 1_700_000_000.0


def claimed_row(raw: bytes, n: int) -> OutboxItem:
    """Row `n`, recorded with a deferred payload, as the delivery worker hands it over."""
    return OutboxItem(
        id=n,
        msg_id=f"msg_{n}",
        account="acct",
        uidl=f"u{n}",
        webhook="main",
        payload=deferred_payload("poller"),
        attempts=0,
        created_at=T0,
        next_attempt_at=T0,
        last_error=None,
        size=len(raw),
        raw=raw,
    )

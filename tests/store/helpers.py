"""Message builders shared by the store tests."""

from __future__ import annotations

import hashlib

from bridge.store import NewMessage


def msg_id(account: str, uidl: str) -> str:
    return "msg_" + hashlib.sha256(f"{account}\0{uidl}".encode()).hexdigest()[:32]


def make_message(
    account: str,
    uidl: str,
    *,
    delete: bool = False,
    raw: bytes | None = b"raw",
    fingerprint: str | None = None,
    webhook: str = "hook",
) -> NewMessage:
    payload = f'{{"uidl":"{uidl}"}}'.encode()
    return NewMessage(
        account=account,
        uidl=uidl,
        msg_id=msg_id(account, uidl),
        webhook=webhook,
        size=len(raw or b""),
        fingerprint=fingerprint if fingerprint is not None else f"fp-{uidl}",
        payload=payload,
        raw=raw,
        delete_after_delivery=delete,
    )

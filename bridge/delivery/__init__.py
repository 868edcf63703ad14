"""Signed webhook delivery: Standard Webhooks signing, one pooled sender, the retry policy.

Knows nothing about POP3. Only `bridge.delivery.worker` (the outbox -> webhook loop) touches the
store; signing, the sender and the policy are pure of it, and the worker persists the schedule
`RetryPolicy` computes. `bridge.delivery.ids.msg_id_for` is the one message-id scheme.

The names below are loaded on first use (PEP 562), not when the package is: importing any
submodule runs this file, and `bridge.delivery.ids` or `.worker` (which the poller, the
outbox and the parse workers import) must not pull in aiohttp through the sender. aiohttp is
about 100 ms of `pop3bridge once`'s start-up and nothing of a parse worker's.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.delivery.policy import RetryPolicy, is_permanent_status, parse_retry_after
    from bridge.delivery.sender import (
        DeliveryError,
        DeliveryResult,
        WebhookSender,
        WebhookTarget,
    )
    from bridge.delivery.signing import InvalidSecret, SigningKeys, sign, verify

_HOME = {
    "RetryPolicy": "policy",
    "is_permanent_status": "policy",
    "parse_retry_after": "policy",
    "DeliveryError": "sender",
    "DeliveryResult": "sender",
    "WebhookSender": "sender",
    "WebhookTarget": "sender",
    "InvalidSecret": "signing",
    "SigningKeys": "signing",
    "sign": "signing",
    "verify": "signing",
}

__all__ = [
    "DeliveryError",
    "DeliveryResult",
    "InvalidSecret",
    "RetryPolicy",
    "SigningKeys",
    "WebhookSender",
    "WebhookTarget",
    "is_permanent_status",
    "parse_retry_after",
    "sign",
    "verify",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value

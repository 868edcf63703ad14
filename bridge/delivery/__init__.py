"""Signed webhook delivery: Standard Webhooks signing, one pooled sender, the retry policy.

Knows nothing about POP3. Only `bridge.delivery.worker` (the outbox -> webhook loop) touches the
store; signing, the sender and the policy are pure of it, and the worker persists the schedule
`RetryPolicy` computes. `bridge.delivery.ids.msg_id_for` is the one message-id scheme.
"""

from bridge.delivery.policy import RetryPolicy, is_permanent_status, parse_retry_after
from bridge.delivery.sender import DeliveryError, DeliveryResult, WebhookSender, WebhookTarget
from bridge.delivery.signing import InvalidSecret, SigningKeys, sign, verify

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

"""Signed webhook delivery: Standard Webhooks signing, one pooled sender, the retry policy.

Knows nothing about the store or POP3: the caller persists the schedule `RetryPolicy` computes.
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

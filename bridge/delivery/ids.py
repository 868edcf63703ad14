"""The message id every outbox row and webhook carries, from one scheme for all producers.

`webhook-id` = `data.id` is derived, never random, so the same message recorded twice (a retry,
a second replica, a client RETRieving it again through the proxy) gets the same id and a
receiver can drop the duplicate. The poller and the proxy's tap both call `msg_id_for`; only
what they pass as account and UIDL differs.
"""

from __future__ import annotations

import hashlib

__all__ = ["msg_id_for"]


def msg_id_for(account: str, uidl: str) -> str:
    """`msg_` + the first 32 hex digits of sha256(account NUL uidl): stable per account+UIDL."""
    digest = hashlib.sha256(f"{account}\0{uidl}".encode("utf-8", "surrogateescape")).hexdigest()
    return "msg_" + digest[:32]

"""The one way a fetched message becomes an outbox row, for the poller and the proxy's tap alike.

Both feed raw RFC 5322 bytes (or, for a message over the size limit, only its headers) and get
the `NewMessage` that `Store.record` makes durable: the parsed payload in its Standard Webhooks
envelope, encoded once, with the id derived from account and UIDL. Keeping it in one place keeps
the two sources' payloads identical but for `source`.
"""

from __future__ import annotations

import datetime as dt

from bridge import mail
from bridge.delivery.ids import msg_id_for
from bridge.store.base import NewMessage

__all__ = ["outbox_row"]


def outbox_row(
    raw: bytes,
    *,
    account: str,
    uidl: str,
    size: int,
    webhook: str,
    now: float,
    attachment_inline_limit: int,
    include_raw: bool,
    oversize_reason: str | None = None,
    delete_after_delivery: bool = False,
    source: str = "poller",
) -> NewMessage:
    """The outbox row for one message; with `oversize_reason`, `raw` holds only its headers.

    An oversize message is never marked for deletion: we could not keep a copy of it.
    """
    oversize = oversize_reason is not None
    if oversize_reason is not None:
        data = mail.metadata_only(raw, reason=oversize_reason)
        fingerprint = mail.fingerprint(raw)
    else:
        # One parse for both: parsing is most of the poller's CPU time.
        data, fingerprint = mail.build_message_data_and_fingerprint(
            raw, attachment_inline_limit=attachment_inline_limit, include_raw=include_raw
        )
    msg_id = msg_id_for(account, uidl)
    body = mail.envelope(
        data,
        msg_id=msg_id,
        account=account,
        uidl=uidl,
        size=size,
        timestamp=dt.datetime.fromtimestamp(now, dt.UTC),
        source=source,
    )
    return NewMessage(
        account=account,
        uidl=uidl,
        msg_id=msg_id,
        webhook=webhook,
        size=size,
        fingerprint=fingerprint,
        payload=mail.encode(body),
        raw=None if oversize else raw,
        delete_after_delivery=delete_after_delivery and not oversize,
    )

"""The one way a fetched message becomes an outbox row, for the poller and the proxy's tap alike.

Both feed raw RFC 5322 bytes (or, for a message over the size limit, only its headers) and get
the `NewMessage` that `Store.record` makes durable: the parsed payload in its Standard Webhooks
envelope, encoded once, with the id derived from account and UIDL. Keeping it in one place keeps
the two sources' payloads identical but for `source`.

With `defer=True` (the poller) the row holds the raw message and a `deferred_payload` note
instead, and `DeferredPayload` builds the very same body when the row is claimed for delivery.
Parsing MIME is most of the CPU a message costs; doing it at delivery lets the fetch make the
mailbox durable at the speed of the POP3 link and keeps a crash or a slow parse from holding a
POP3 session open. Messages of `DEFER_MAX` bytes or more are still built at fetch, so a claim
of many rows never loads many big raw messages at once.
"""

from __future__ import annotations

import datetime as dt

from bridge import mail
from bridge.delivery.ids import msg_id_for
from bridge.store.base import NewMessage, OutboxItem, deferred_payload, deferred_source

__all__ = ["DEFER_MAX", "DeferredPayload", "outbox_row"]

DEFER_MAX = 1 << 20


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
    defer: bool = False,
) -> NewMessage:
    """The outbox row for one message; with `oversize_reason`, `raw` holds only its headers.

    An oversize message is never marked for deletion: we could not keep a copy of it. With
    `defer`, a message under `DEFER_MAX` gets its body built at delivery (module docstring);
    its envelope timestamp is then the row's `created_at`, which `Store.record` sets to the
    same `now`.
    """
    oversize = oversize_reason is not None
    if defer and not oversize and len(raw) < DEFER_MAX:
        return NewMessage(
            account=account,
            uidl=uidl,
            msg_id=msg_id_for(account, uidl),
            webhook=webhook,
            size=size,
            fingerprint=mail.fingerprint(raw),
            payload=deferred_payload(source),
            raw=raw,
            delete_after_delivery=delete_after_delivery,
        )
    if oversize_reason is not None:
        data = mail.metadata_only(raw, reason=oversize_reason)
        fingerprint = mail.fingerprint(raw)
    else:
        # One parse for both: parsing is most of the poller's CPU time.
        data, fingerprint = mail.build_message_data_and_fingerprint(
            raw, attachment_inline_limit=attachment_inline_limit, include_raw=include_raw
        )
    msg_id = msg_id_for(account, uidl)
    body = _body(data, msg_id=msg_id, account=account, uidl=uidl, size=size, now=now, source=source)
    return NewMessage(
        account=account,
        uidl=uidl,
        msg_id=msg_id,
        webhook=webhook,
        size=size,
        fingerprint=fingerprint,
        payload=body,
        raw=None if oversize else raw,
        delete_after_delivery=delete_after_delivery and not oversize,
    )


def _body(
    data: dict[str, object],
    *,
    msg_id: str,
    account: str,
    uidl: str,
    size: int,
    now: float,
    source: str,
) -> bytes:
    envelope = mail.envelope(
        data,
        msg_id=msg_id,
        account=account,
        uidl=uidl,
        size=size,
        timestamp=dt.datetime.fromtimestamp(now, dt.UTC),
        source=source,
    )
    return mail.encode(envelope)


class DeferredPayload:
    """A route's builder of deferred bodies: `(item) -> bytes`, the body `outbox_row` would
    have built at fetch time with this webhook's options.

    Building is deterministic (same raw, options and `created_at` give the same bytes), so a
    retried delivery signs the same body under the same webhook-id.
    """

    def __init__(self, *, attachment_inline_limit: int, include_raw: bool) -> None:
        self.attachment_inline_limit = attachment_inline_limit
        self.include_raw = include_raw

    def __call__(self, item: OutboxItem) -> bytes:
        source = deferred_source(item.payload)
        if source is None:
            return item.payload
        if item.raw is None:
            raise ValueError(f"outbox row {item.id} has a deferred payload but no raw message")
        data = mail.build_message_data(
            item.raw,
            attachment_inline_limit=self.attachment_inline_limit,
            include_raw=self.include_raw,
        )
        return _body(
            data,
            msg_id=item.msg_id,
            account=item.account,
            uidl=item.uidl,
            size=item.size,
            now=item.created_at,
            source=source,
        )

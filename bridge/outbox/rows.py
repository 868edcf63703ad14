"""A fetched message becomes its outbox row: deferred, built at once, or built with links.

Three kinds of row, chosen by `outbox_row`:

- **deferred** (most poller mail, every tap copy under `DEFER_MAX`): the raw message and a
  note; the body is built at delivery (`bridge.outbox.deferred`);
- **built now**: messages of `DEFER_MAX` bytes or more (a claim of many rows must never load
  many big raw messages at once), oversize messages (headers only) and `peek`'s;
- **built now, with links** (`attachments:` configured, the standard format, and a message
  over half the inline limit): attachments over the limit and a big raw message are served by
  signed link, and their decoded content must go into the store with the row, which a parse at
  delivery could not do.

`isolated_row` is what the poller's fetch and the proxy's tap call: the same rows, with every
parse that has to happen now (the last two kinds, but for oversize headers) done by the
process's parse workers (`RowJob`, `RowParse`), so the event loop never parses mail.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from bridge import mail
from bridge.attachments.templates import LinkMinter, new_nonce, template_payload
from bridge.delivery.ids import msg_id_for
from bridge.outbox.deferred import BodyJob, BodySpec, body, note
from bridge.outbox.pool import current_pool
from bridge.records import record
from bridge.store.base import LinkContent, NewMessage, OutboxItem, deferred_payload

__all__ = [
    "DEFER_MAX",
    "DeferredRows",
    "RowJob",
    "RowParse",
    "isolated_row",
    "outbox_row",
    "parsed_at_fetch",
    "parsed_from",
]

DEFER_MAX = 1 << 20


@record
class RowParse:
    """What the parse of a row with links gives: the payload data, the fingerprint (None: the
    message was not parsed, scan the bytes), the decoded contents of the attachments over the
    inline limit, and whether the raw message is to be linked rather than inlined."""

    data: dict[str, Any]
    fingerprint: str | None
    contents: tuple[mail.Content, ...]
    raw_link: bool


@record
class RowJob:
    """The parse `Job` of a row with links (`bridge.outbox.pool`): runs in a parse worker, so
    a hostile message costs that worker at most `poller.parse_timeout`, never the loop."""

    raw: bytes
    attachment_inline_limit: int
    include_raw: bool
    options: mail.MailOptions = mail.DEFAULT_OPTIONS

    def run(self) -> RowParse:
        raw_link = self.include_raw and len(self.raw) > self.attachment_inline_limit
        contents: list[mail.Content] = []
        # One parse for both: parsing is most of the poller's CPU time.
        data, fingerprint = mail.build_message_data_and_fingerprint(
            self.raw,
            attachment_inline_limit=self.attachment_inline_limit,
            include_raw=self.include_raw and not raw_link,
            options=self.options,
            contents=contents,
        )
        return self._linked(data, fingerprint, contents, raw_link)

    def fallback(self, reason: str, bare: bool) -> RowParse:
        stand_in = mail.minimal if bare else mail.degraded
        return self._linked(stand_in(self.raw, reason, options=self.options), None, [], False)

    def _linked(
        self,
        data: dict[str, Any],
        fingerprint: str | None,
        contents: list[mail.Content],
        raw_link: bool,
    ) -> RowParse:
        if data["raw"] is not None and len(self.raw) > self.attachment_inline_limit:
            data["raw"] = None  # the parser gave up and attached it: link it instead
            raw_link = True
        return RowParse(data, fingerprint, tuple(contents), raw_link)

    def about(self) -> dict[str, str]:
        return {"size": str(len(self.raw))}


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
    defer_any_size: bool = False,
    options: mail.MailOptions = mail.DEFAULT_OPTIONS,
    links: LinkMinter | None = None,
    session: str | None = None,
    parsed: RowParse | None = None,
) -> NewMessage:
    """The outbox row for one message; with `oversize_reason`, `raw` holds only its headers.

    An oversize message is never marked for deletion: we could not keep a copy of it. With
    `defer`, a message under `DEFER_MAX` gets its body built at delivery (module docstring);
    its envelope timestamp is then the row's `created_at`, which `Store.record` sets to the
    same `now`. `defer_any_size` defers bigger ones too: a webhook with a delivery format
    needs every attachment's bytes, which only the raw message has. `options` are the
    account's (mailbox hash separator, trusted provider headers).

    With `links` (and the standard format), attachments over the inline limit (and the raw
    message, when asked for and over it) get signed links: their decoded content goes into the
    row for the store to keep, and the body is a template rendered at delivery
    (`bridge.attachments.templates`). Only a message of at most half the inline limit is still
    deferred, since no part of it can decode to more than twice its size (an embedded message
    with bare LF line ends is re-emitted with CRLF). `parsed` is that parse when a worker made
    it (`isolated_row`); without it the parse runs here. `session` names the poll session that
    fetched it, for the custody trail.
    """
    oversize = oversize_reason is not None
    linkable = links is not None and 2 * len(raw) > attachment_inline_limit
    if defer and not oversize and (defer_any_size or (len(raw) < DEFER_MAX and not linkable)):
        rows = DeferredRows.of(
            account=account,
            webhook=webhook,
            delete_after_delivery=delete_after_delivery,
            source=source,
            options=options,
            session=session,
        )
        return rows(uidl, raw, size)
    msg_id = msg_id_for(account, uidl)
    link_contents: tuple[LinkContent, ...] = ()
    links_expire: float | None = None
    nonce: str | None = None
    fingerprint: str | None
    if oversize_reason is not None:
        data = mail.metadata_only(raw, reason=oversize_reason, options=options)
        fingerprint = mail.fingerprint(raw)
    elif links is not None and linkable:
        if parsed is None:
            parsed = RowJob(raw, attachment_inline_limit, include_raw, options).run()
        data, fingerprint = parsed.data, parsed.fingerprint
        if parsed.contents or parsed.raw_link:
            nonce = new_nonce()
            data, link_contents = links.add_links(
                data, parsed.contents, raw if parsed.raw_link else None, nonce=nonce
            )
            links_expire = links.expiry(now)
    else:
        # One parse for both: parsing is most of the poller's CPU time.
        data, fingerprint = mail.build_message_data_and_fingerprint(
            raw,
            attachment_inline_limit=attachment_inline_limit,
            include_raw=include_raw,
            options=options,
        )
    if fingerprint is None:  # not parsed, or the parse could not give it: scan the bytes
        fingerprint, message_id = mail.header_keys(raw)
    else:
        message_id = mail.message_id(raw)
    envelope = {"msg_id": msg_id, "account": account, "uidl": uidl, "size": size, "now": now}
    encoded = body(data, **envelope, source=source)
    return NewMessage(
        account=account,
        uidl=uidl,
        msg_id=msg_id,
        webhook=webhook,
        size=size,
        fingerprint=fingerprint,
        payload=encoded if nonce is None else template_payload(nonce, encoded),
        raw=None if oversize else raw,
        delete_after_delivery=delete_after_delivery and not oversize,
        links=link_contents,
        links_expire=links_expire,
        session=session,
        message_id=message_id,
    )


@record
class DeferredRows:
    """The deferred rows (module docstring) of one session's messages: what
    `outbox_row(..., defer=True)` and `isolated_row` give a message `parsed_at_fetch` does not
    parse now, built without either's dispatch. What is the same for all of them (the note and
    its payload, account, webhook, session) is made once, in `of`.

    The fetch stage builds one row per message it reads, on the event loop. Per message that
    was also the note (comparing the account's options with the defaults), its payload, two
    calls of eight keywords and a `NewMessage` of keywords: 41.4 K instructions beside the
    header scan's 92.1 K (callgrind, the bench's 5 KB messages). Now a row is the scan
    (`mail.header_keys`: fingerprint and Message-ID), `msg_id_for` and the `NewMessage`, built
    from positional fields in `NewMessage`'s order: 29.6 K beside the scan.
    """

    account: str
    webhook: str
    delete_after_delivery: bool
    session: str | None
    payload: bytes

    @classmethod
    def of(
        cls,
        *,
        account: str,
        webhook: str,
        delete_after_delivery: bool,
        source: str = "poller",
        options: mail.MailOptions = mail.DEFAULT_OPTIONS,
        session: str | None = None,
    ) -> DeferredRows:
        payload = deferred_payload(note(source, options))
        return cls(account, webhook, delete_after_delivery, session, payload)

    def __call__(self, uidl: str, raw: bytes, size: int) -> NewMessage:
        """The row of `raw` (`size`: its size as the row records it, `len(raw)` when fetched)."""
        fingerprint, message_id = mail.header_keys(raw)
        account = self.account
        # account, uidl, msg_id, webhook, size, fingerprint, payload, raw,
        # delete_after_delivery, links, links_expire, session, message_id
        return NewMessage(
            account,
            uidl,
            msg_id_for(account, uidl),
            self.webhook,
            size,
            fingerprint,
            self.payload,
            raw,
            self.delete_after_delivery,
            (),
            None,
            self.session,
            message_id,
        )


def parsed_at_fetch(
    size: int, *, attachment_inline_limit: int, links: bool, defer_any_size: bool
) -> bool:
    """Whether `isolated_row(..., defer=True)` parses a fetched message of `size` bytes now
    (in the parse workers, so the caller may start it as a task and read on: the pool sends
    what is queued in one round trip) rather than recording it raw."""
    if defer_any_size:
        return False
    return size >= DEFER_MAX or (links and 2 * size > attachment_inline_limit)


def parsed_from(*, attachment_inline_limit: int, links: bool, defer_any_size: bool) -> float:
    """The least size `parsed_at_fetch` says is parsed now, for the same settings (inf: no
    size): `size >= parsed_from(...)` is `parsed_at_fetch(size, ...)` for every int size, one
    comparison per fetched message instead of a call with four keywords."""
    if defer_any_size:
        return math.inf
    if links:  # 2 * size > limit, for ints: size > limit // 2
        return min(DEFER_MAX, attachment_inline_limit // 2 + 1)
    return DEFER_MAX


def _linked_now(raw: bytes, kwargs: dict[str, Any]) -> bool:
    """Whether `outbox_row(raw, **kwargs)` builds a row with links now (module docstring)."""
    if kwargs.get("links") is None or kwargs.get("oversize_reason") is not None:
        return False
    if kwargs.get("defer") and kwargs.get("defer_any_size"):
        return False
    return 2 * len(raw) > int(kwargs["attachment_inline_limit"])


async def isolated_row(raw: bytes, **kwargs: Any) -> NewMessage:
    """`outbox_row(raw, **kwargs)`, with the parse (when the row needs one now) done by this
    process's `ParsePool` if it has one, so the event loop never parses mail.

    A row with links gets its `RowJob` parsed there. Any other row that is built now is built
    as a deferred one first, and the pool builds its body exactly as it would at delivery
    (same options, the fetch time as `created_at`). An oversize row reads only capped headers
    and is built here.
    """
    pool = current_pool()
    if pool is None or kwargs.get("oversize_reason") is not None:
        return outbox_row(raw, **kwargs)
    if _linked_now(raw, kwargs):
        job = RowJob(
            raw,
            int(kwargs["attachment_inline_limit"]),
            bool(kwargs["include_raw"]),
            kwargs.get("options", mail.DEFAULT_OPTIONS),
        )
        return outbox_row(raw, **kwargs, parsed=await pool.run(job))
    row = outbox_row(raw, **{**kwargs, "defer": True, "defer_any_size": True})
    if kwargs.get("defer") and (len(raw) < DEFER_MAX or kwargs.get("defer_any_size")):
        return row  # built at delivery
    now = float(kwargs["now"])
    item = OutboxItem(
        id=0,
        msg_id=row.msg_id,
        account=row.account,
        uidl=row.uidl,
        webhook=row.webhook,
        payload=row.payload,
        attempts=0,
        created_at=now,
        next_attempt_at=now,
        last_error=None,
        size=row.size,
        raw=raw,
    )
    spec = BodySpec(
        attachment_inline_limit=int(kwargs["attachment_inline_limit"]),
        include_raw=bool(kwargs["include_raw"]),
    )
    built = await pool.run(BodyJob(spec, item, now))
    return dataclasses.replace(row, payload=built)

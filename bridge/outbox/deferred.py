"""Bodies built at delivery: a row recorded raw becomes the body the fetch would have built.

The poller (and the proxy's tap) record most messages raw, with a `deferred_payload` note
naming their source and the account's payload options (`note`); `DeferredPayload`, a route's
`prepare` step, builds the body when the row is claimed, in a parse worker (`BodyJob` through
`bridge.outbox.pool.ParsePool`) when the process has one. Building is deterministic (same raw,
options and `created_at` give the same bytes), so a retried delivery signs the same body under
the same webhook-id. A delivery format (`bridge.mail.formats`) reshapes every row, from its raw
message when the store has it or from its stored standard body.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import operator
import time
from collections.abc import Callable
from dataclasses import field
from typing import TYPE_CHECKING, Any

import orjson

from bridge import mail
from bridge.mail.formats import FormatOptions, render
from bridge.outbox.pool import ParsePool
from bridge.records import record
from bridge.store.base import OutboxItem, deferred_source

if TYPE_CHECKING:
    from bridge.attachments.templates import LinkMinter

__all__ = ["BodyJob", "BodySpec", "DeferredPayload", "body", "envelope", "note"]


def body(data: dict[str, object], **envelope_fields: Any) -> bytes:
    """The encoded standard body (`envelope`'s keyword arguments)."""
    return mail.encode(envelope(data, **envelope_fields))


def envelope(
    data: dict[str, object],
    *,
    msg_id: str,
    account: str,
    uidl: str,
    size: int,
    now: float,
    source: str,
) -> dict[str, Any]:
    return mail.envelope(
        data,
        msg_id=msg_id,
        account=account,
        uidl=uidl,
        size=size,
        timestamp=dt.datetime.fromtimestamp(now, dt.UTC),
        source=source,
    )


def note(source: str, options: mail.MailOptions) -> str:
    """A deferred row's note: its source, and the account's payload options when they are not
    the defaults (so the body built at delivery is the one the fetch would have built, for
    accounts from the database as much as from the file)."""
    if options == mail.DEFAULT_OPTIONS:
        return source
    fields = {
        "mailbox_hash_separator": options.mailbox_hash_separator,
        "trusted_authserv_ids": list(options.trusted_authserv_ids),
        "trust_spam_headers": options.trust_spam_headers,
    }
    return source + "\n" + json.dumps(fields, ensure_ascii=True, sort_keys=True)


def _from_note(text: str) -> tuple[str, mail.MailOptions]:
    source, _, rest = text.partition("\n")
    if not rest:
        return source, mail.DEFAULT_OPTIONS
    fields = json.loads(rest)
    return source, mail.MailOptions(
        mailbox_hash_separator=str(fields["mailbox_hash_separator"]),
        trusted_authserv_ids=tuple(str(i) for i in fields["trusted_authserv_ids"]),
        trust_spam_headers=bool(fields["trust_spam_headers"]),
    )


@record
class BodySpec:
    """Everything a route's bodies depend on besides the row: picklable, so a parse worker
    process builds with exactly the options the route has."""

    attachment_inline_limit: int
    include_raw: bool
    format: FormatOptions = field(default_factory=FormatOptions)


@record
class BodyJob:
    """The parse `Job` for one row's body under `spec` at time `now` (a format's timestamp)."""

    spec: BodySpec
    item: OutboxItem
    now: float

    def run(self) -> bytes:
        return _build(self.spec, self.item, self.now)

    def fallback(self, reason: str, bare: bool) -> bytes:
        return _build(self.spec, self.item, self.now, fallback=(reason, bare))

    def about(self) -> dict[str, str]:
        return {"account": self.item.account, "msg_id": self.item.msg_id}

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled once per message on its way to a parse worker: the row as a flat tuple.
        # A frozen slots dataclass pickles through `dataclasses.fields()` and sets each field
        # back with object.__setattr__: 15 of the 27 us per message of the round trip's
        # pickling (bench/parse_cost.py --round-trip).
        return (_body_job, (self.spec, _item_fields(self.item), self.now))


_item_fields = operator.attrgetter(*(f.name for f in dataclasses.fields(OutboxItem)))


def _body_job(spec: BodySpec, item: tuple[Any, ...], now: float) -> BodyJob:
    return BodyJob(spec, OutboxItem(*item), now)


# A delivery format carries every attachment's bytes, as the service it imitates does.
_ALL_CONTENT = 1 << 62


class DeferredPayload:
    """A route's builder of bodies: `await builder(item) -> bytes`.

    For the standard format: the body `outbox_row` would have built at fetch time with this
    webhook's options, for rows recorded deferred; other rows' bodies as stored, link
    templates rendered with fresh signatures. For a delivery format: every row reshaped.
    With a `ParsePool` the parsing happens in its worker processes; `body(item)` always
    builds in this process.
    """

    def __init__(
        self,
        *,
        attachment_inline_limit: int,
        include_raw: bool,
        pool: ParsePool | None = None,
        format: FormatOptions | None = None,
        clock: Callable[[], float] = time.time,
        links: LinkMinter | None = None,
    ) -> None:
        self.spec = BodySpec(
            attachment_inline_limit=attachment_inline_limit,
            include_raw=include_raw,
            format=format or FormatOptions(),
        )
        self.pool = pool
        self.clock = clock
        self.links = links
        # Imported here, in the bridge: a parse worker unpickles `BodyJob`s from this module
        # and needs none of the link machinery (7 ms of its start).
        from bridge.attachments.templates import is_template

        self._templated = is_template

    @property
    def attachment_inline_limit(self) -> int:
        return self.spec.attachment_inline_limit

    @property
    def include_raw(self) -> bool:
        return self.spec.include_raw

    async def __call__(self, item: OutboxItem) -> bytes:
        if self._templated(item.payload):
            if self.links is None:
                raise LookupError(
                    "this message's body carries attachment links but the attachments "
                    "section is not configured, so they cannot be signed"
                )
            rendered = self.links.render(item.payload, item.msg_id, item.links_expire)
            if self.spec.format.standard:
                return rendered
            # Recorded for the standard format, delivered after a switch to another one.
            return render(self.spec.format, orjson.loads(rendered), raw=None, now=self.clock())
        if deferred_source(item.payload) is None and self.spec.format.standard:
            return item.payload
        if self.pool is not None:
            return await self.pool.run(BodyJob(self.spec, item, self.clock()))
        return self.body(item)

    def body(self, item: OutboxItem, now: float | None = None) -> bytes:
        """The body for `item`; `now` is the attempt's time (a format's timestamp)."""
        return _build(self.spec, item, self.clock() if now is None else now)


def _build(
    spec: BodySpec, item: OutboxItem, now: float, fallback: tuple[str, bool] | None = None
) -> bytes:
    """The body of `item` under `spec`. With `fallback=(reason, minimal)` the message is not
    parsed: `mail.degraded` (headers only) or, with `minimal`, `mail.minimal` (no header read)
    stand in for its data, with `reason` in `parse_errors` and the raw message attached."""
    text = deferred_source(item.payload)
    reshape = not spec.format.standard
    if text is None:
        if not reshape:
            return item.payload
        return render(spec.format, orjson.loads(item.payload), raw=None, now=now)
    if item.raw is None:
        raise ValueError(f"outbox row {item.id} has a deferred payload but no raw message")
    source, options = _from_note(text)
    if fallback is not None:
        reason, bare = fallback
        stand_in = mail.minimal if bare else mail.degraded
        data = stand_in(item.raw, reason, options=options)
    else:
        data = mail.build_message_data(
            item.raw,
            attachment_inline_limit=_ALL_CONTENT if reshape else spec.attachment_inline_limit,
            include_raw=spec.include_raw and not reshape,
            options=options,
        )
    kwargs: dict[str, Any] = {
        "msg_id": item.msg_id,
        "account": item.account,
        "uidl": item.uidl,
        "size": item.size,
        "now": item.created_at,
        "source": source,
    }
    if not reshape:
        return body(data, **kwargs)
    return render(spec.format, envelope(data, **kwargs), raw=item.raw, now=now)

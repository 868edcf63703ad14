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

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge import mail
from bridge.attachments.templates import LinkMinter, is_template, new_nonce, template_payload
from bridge.delivery.ids import msg_id_for
from bridge.mail.formats import FormatOptions, render
from bridge.store.base import (
    LinkContent,
    NewMessage,
    OutboxItem,
    deferred_payload,
    deferred_source,
)

__all__ = [
    "DEFER_MAX",
    "BodySpec",
    "DeferredPayload",
    "ParsePool",
    "build_bodies",
    "outbox_row",
]

log = logging.getLogger(__name__)

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
    defer_any_size: bool = False,
    options: mail.MailOptions = mail.DEFAULT_OPTIONS,
    links: LinkMinter | None = None,
    session: str | None = None,
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
    (`bridge.attachments.templates`). Such a message is parsed here, never deferred: a
    deferred parse runs where nothing can be written to the store. Only a message of at most
    half the inline limit is still deferred, since no part of it can decode to more than twice
    its size (an embedded message with bare LF line ends is re-emitted with CRLF).
    `session` names the poll session that fetched it, for the custody trail.
    """
    oversize = oversize_reason is not None
    linkable = links is not None and 2 * len(raw) > attachment_inline_limit
    if defer and not oversize and (defer_any_size or (len(raw) < DEFER_MAX and not linkable)):
        return NewMessage(
            account=account,
            uidl=uidl,
            msg_id=msg_id_for(account, uidl),
            webhook=webhook,
            size=size,
            fingerprint=mail.fingerprint(raw),
            payload=deferred_payload(_note(source, options)),
            raw=raw,
            delete_after_delivery=delete_after_delivery,
            session=session,
            message_id=mail.message_id(raw),
        )
    msg_id = msg_id_for(account, uidl)
    link_contents: tuple[LinkContent, ...] = ()
    links_expire: float | None = None
    nonce: str | None = None
    if oversize_reason is not None:
        data = mail.metadata_only(raw, reason=oversize_reason, options=options)
        fingerprint = mail.fingerprint(raw)
    else:
        raw_link = linkable and include_raw and len(raw) > attachment_inline_limit
        contents: list[mail.Content] | None = [] if linkable else None
        # One parse for both: parsing is most of the poller's CPU time.
        data, fingerprint = mail.build_message_data_and_fingerprint(
            raw,
            attachment_inline_limit=attachment_inline_limit,
            include_raw=include_raw and not raw_link,
            options=options,
            contents=contents,
        )
        if links is not None and contents is not None:
            if data["raw"] is not None and len(raw) > attachment_inline_limit:
                data["raw"] = None  # the parser gave up and attached it: link it instead
                raw_link = True
            if contents or raw_link:
                nonce = new_nonce()
                data, link_contents = links.add_links(
                    data, contents, raw if raw_link else None, nonce=nonce
                )
                links_expire = links.expiry(now)
    body = _body(data, msg_id=msg_id, account=account, uidl=uidl, size=size, now=now, source=source)
    return NewMessage(
        account=account,
        uidl=uidl,
        msg_id=msg_id,
        webhook=webhook,
        size=size,
        fingerprint=fingerprint,
        payload=body if nonce is None else template_payload(nonce, body),
        raw=None if oversize else raw,
        delete_after_delivery=delete_after_delivery and not oversize,
        links=link_contents,
        links_expire=links_expire,
        session=session,
        message_id=mail.message_id(raw),
    )


def _body(data: dict[str, object], **envelope: Any) -> bytes:
    """The encoded standard body (`_envelope`'s keyword arguments)."""
    return mail.encode(_envelope(data, **envelope))


def _envelope(
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


def _note(source: str, options: mail.MailOptions) -> str:
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


def _from_note(note: str) -> tuple[str, mail.MailOptions]:
    source, _, rest = note.partition("\n")
    if not rest:
        return source, mail.DEFAULT_OPTIONS
    fields = json.loads(rest)
    return source, mail.MailOptions(
        mailbox_hash_separator=str(fields["mailbox_hash_separator"]),
        trusted_authserv_ids=tuple(str(i) for i in fields["trusted_authserv_ids"]),
        trust_spam_headers=bool(fields["trust_spam_headers"]),
    )


@dataclass(frozen=True, slots=True)
class BodySpec:
    """Everything a route's bodies depend on besides the row: picklable, so a parse worker
    process builds with exactly the options the route has."""

    attachment_inline_limit: int
    include_raw: bool
    format: FormatOptions = field(default_factory=FormatOptions)


# A delivery format carries every attachment's bytes, as the service it imitates does.
_ALL_CONTENT = 1 << 62


class DeferredPayload:
    """A route's builder of bodies: `await builder(item) -> bytes`.

    For the standard format: the body `outbox_row` would have built at fetch time with this
    webhook's options, for rows recorded deferred; other rows' bodies as stored. Building is
    deterministic (same raw, options and `created_at` give the same bytes), so a retried
    delivery signs the same body under the same webhook-id. For a delivery format
    (`bridge.mail.formats`): every row reshaped, from its raw message when the store has it
    (deferred rows) or from its stored standard body. With a `ParsePool` the parsing happens
    in its worker processes; `body(item)` always builds in this process.
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

    @property
    def attachment_inline_limit(self) -> int:
        return self.spec.attachment_inline_limit

    @property
    def include_raw(self) -> bool:
        return self.spec.include_raw

    async def __call__(self, item: OutboxItem) -> bytes:
        if is_template(item.payload):
            if self.links is None:
                raise LookupError(
                    "this message's body carries attachment links but the attachments "
                    "section is not configured, so they cannot be signed"
                )
            body = self.links.render(item.payload, item.msg_id, item.links_expire)
            if self.spec.format.standard:
                return body
            # Recorded for the standard format, delivered after a switch to another one.
            return render(self.spec.format, orjson.loads(body), raw=None, now=self.clock())
        if deferred_source(item.payload) is None and self.spec.format.standard:
            return item.payload
        if self.pool is not None:
            return await self.pool.build(item, self)
        return self.body(item)

    def body(self, item: OutboxItem, now: float | None = None) -> bytes:
        """The body for `item`; `now` is the attempt's time (a format's timestamp)."""
        return _build(self.spec, item, self.clock() if now is None else now)


def _build(spec: BodySpec, item: OutboxItem, now: float) -> bytes:
    note = deferred_source(item.payload)
    reshape = not spec.format.standard
    if note is None:
        if not reshape:
            return item.payload
        return render(spec.format, orjson.loads(item.payload), raw=None, now=now)
    if item.raw is None:
        raise ValueError(f"outbox row {item.id} has a deferred payload but no raw message")
    source, options = _from_note(note)
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
        return _body(data, **kwargs)
    return render(spec.format, _envelope(data, **kwargs), raw=item.raw, now=now)


def build_bodies(items: Sequence[OutboxItem], spec: BodySpec, now: float) -> list[bytes]:
    """The body of each item under `spec`: what a parse worker process runs."""
    return [_build(spec, item, now) for item in items]


class ParsePool:
    """Worker processes (`poller.parse_workers`) that build deferred bodies.

    Parsing MIME is most of the CPU a delivery costs, and the event loop that sends the
    webhooks is one core. Requests that arrive while a batch is with the workers are sent
    together as the next batch, so a process round trip carries about ten messages and the
    main process's share of a message falls from ~0.45 to ~0.22 ms (BENCHMARKS.md).

    Workers start from a forkserver (safe beside the store's thread). If the pool breaks (a
    worker killed, say), it is not restarted: bodies are built in this process from then on,
    with one warning, and nothing is lost, since a body is only ever built from the stored raw
    message.
    """

    def __init__(self, workers: int) -> None:
        import multiprocessing  # only here: most runs have no parse workers

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["bridge.outbox"])
        self._executor = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
        self._broken = False
        self._queued: list[tuple[OutboxItem, DeferredPayload, asyncio.Future[bytes]]] = []
        self._running: asyncio.Task[None] | None = None
        # Start the workers now, while the poller logs in, rather than on the first message,
        # and from a thread: starting a forkserver takes a few hundred milliseconds that the
        # event loop would otherwise spend blocked.
        threading.Thread(target=self._warm_up, name="parse-pool-start", daemon=True).start()
        log.info("webhook bodies are parsed in %d worker process(es)", workers)

    def _warm_up(self) -> None:
        with contextlib.suppress(Exception):  # a failed start shows up on the first batch
            self._executor.submit(build_bodies, [], BodySpec(0, False), 0.0).add_done_callback(
                _ignore_result
            )

    async def build(self, item: OutboxItem, builder: DeferredPayload) -> bytes:
        if self._broken:
            return builder.body(item)
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._queued.append((item, builder, done))
        if self._running is None:
            self._running = asyncio.ensure_future(self._run())
        return await done

    async def _run(self) -> None:
        try:
            while self._queued:
                group, self._queued = self._queued, []
                by_options: dict[BodySpec, list[tuple[OutboxItem, asyncio.Future[bytes]]]]
                by_options = {}
                clocks: dict[BodySpec, Callable[[], float]] = {}
                for item, builder, done in group:
                    by_options.setdefault(builder.spec, []).append((item, done))
                    clocks[builder.spec] = builder.clock
                await asyncio.gather(
                    *(self._batch(k, v, clocks[k]()) for k, v in by_options.items())
                )
        finally:
            self._running = None

    async def _batch(
        self,
        spec: BodySpec,
        batch: list[tuple[OutboxItem, asyncio.Future[bytes]]],
        now: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._broken:
                raise concurrent.futures.BrokenExecutor("parse workers are gone")
            bodies = await loop.run_in_executor(
                self._executor, build_bodies, [item for item, _ in batch], spec, now
            )
        except Exception as exc:
            if isinstance(exc, concurrent.futures.BrokenExecutor) and not self._broken:
                self._broken = True
                log.warning(
                    "parse worker processes failed (%s); parsing in the main process from now on",
                    exc,
                )
            # Build here, one by one, so each item gets its own result or its own error.
            for item, done in batch:
                if done.done():
                    continue
                try:
                    done.set_result(_build(spec, item, now))
                except Exception as error:
                    done.set_exception(error)
            return
        for (_, done), body in zip(batch, bodies, strict=True):
            if not done.done():
                done.set_result(body)

    def close(self) -> None:
        """Stop the workers; bodies not yet built are built again from the store next time."""
        self._broken = True
        for _, _, done in self._queued:
            if not done.done():
                done.cancel()
        self._queued = []
        self._executor.shutdown(wait=False, cancel_futures=True)


def _ignore_result(future: concurrent.futures.Future[list[bytes]]) -> None:
    future.exception()  # a failed warm-up shows up, once, on the first real batch

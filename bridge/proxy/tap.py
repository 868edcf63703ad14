"""The tap: a copy of every message a client RETRieves through a tapped route, as a webhook.

The relay calls `Tap.begin` when a RETR is sent upstream, `TapCapture.feed` with the dot-unstuffed
message bytes as they pass to the client, and `finish` (the terminating line arrived) or `abort`
(the response was -ERR, cut off, or the session ended). Everything slow happens elsewhere:
`feed` only appends to a list, `finish` only queues, and a background task hashes the copy (in
a thread when it is large), turns it into an outbox row the way the poller does
(`bridge.outbox.isolated_row`: kept raw and shaped at delivery, or, for a big message or one
with attachment links, parsed now; every parse in the parse worker processes, with
`poller.parse_timeout` and `parse_memory_limit`), records it and wakes the delivery worker,
which sends it with the poller's signing, retries and dead letters. The client never waits for
the tap, and a hostile message cannot hold the proxy's event loop (a parse in a thread would:
it holds the GIL).

What "nothing lost" means for a copy: the client already has its mail from the server, so the
tap never holds the session back to protect the copy. Once a copy is in the outbox it has every
guarantee poller mail has (retried until the webhook takes it or it is dead-lettered). Before
that, a copy can only be lost by overload or shutdown: the hand-off queue is bounded (count and
bytes), because an unbounded one would let a slow store turn client traffic into proxy memory.
Every copy that does not reach the outbox is counted in `pop3bridge_proxy_tap_messages_total`
(outcome `dropped` or `failed`) and logged with user, route and message number, so an operator
can fetch it again; nothing disappears silently.

Ids: the account is `proxy:<route>:<user>` and the UIDL is a SHA-256 of the message bytes
(of the headers and size for a metadata-only copy), so the webhook-id is stable: a client that
RETRieves the same message twice (or in two sessions) produces one outbox row, and a receiver
sees one delivery. The proxy cannot use the server's UIDL, because clients need not ask for it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from bridge.attachments.templates import LinkMinter
from bridge.outbox import isolated_row
from bridge.store.base import NewMessage, Store
from bridge.store.errors import StoreError

__all__ = [
    "HEADER_LIMIT",
    "Tap",
    "TapCapture",
    "TapTarget",
    "build_tap",
    "tap_account",
]

log = logging.getLogger(__name__)

HEADER_LIMIT = 256 * 1024  # header bytes kept for a metadata-only copy
INLINE_HASH_LIMIT = 64 * 1024  # larger copies are joined and hashed in a thread
QUEUE_ITEMS = 1000
QUEUE_BYTES = 256 * 1024 * 1024
STORE_RETRY_MAX = 30.0


@dataclass(frozen=True, slots=True)
class TapTarget:
    """One tapped route: where its copies go and how they become a payload."""

    webhook: str
    max_message_size: int = 50 * 1024 * 1024
    attachment_inline_limit: int = 1024 * 1024
    include_raw: bool = False
    # The webhook has a delivery format (bridge.mail.formats): copies are kept raw and shaped
    # at delivery, so the request carries every attachment's bytes.
    reshaped: bool = False
    # Big attachments by signed link (`attachments:`), served by the proxy or a `run` sharing
    # the store.
    links: LinkMinter | None = None


def tap_account(route: str, user: str) -> str:
    """The payload's `account` for copies of `user`'s mail on `route` (a route match pattern)."""
    return f"proxy:{route}:{user}"


@dataclass(slots=True)
class _Copy:
    user: str
    route: str
    listener: str
    msgno: int
    target: TapTarget
    size: int
    parts: list[bytes]  # the whole message, or only its header block when `oversize`
    held: int  # bytes in `parts`

    def content(self) -> bytes:
        return b"".join(self.parts)

    oversize: bool
    queued_at: float


def _metric(listener: str, outcome: str) -> None:
    from bridge.ops.metrics import PROXY_TAP, best_effort

    best_effort(lambda: PROXY_TAP.labels(listener=listener, outcome=outcome).inc())


class TapCapture:
    """Collects one RETR response's message; created by `Tap.begin`, used by the relay."""

    __slots__ = (
        "_chunks",
        "_done",
        "_head",
        "_head_done",
        "_tap",
        "listener",
        "msgno",
        "oversize",
        "route",
        "size",
        "target",
        "user",
    )

    def __init__(
        self, tap: Tap, target: TapTarget, *, user: str, route: str, listener: str, msgno: int
    ) -> None:
        self._tap = tap
        self.target = target
        self.user, self.route, self.listener, self.msgno = user, route, listener, msgno
        self.size = 0
        self.oversize = False
        self._chunks: list[bytes] = []
        self._head = bytearray()
        self._head_done = False
        self._done = False

    def feed(self, chunk: bytes) -> None:
        """Dot-unstuffed message bytes, in order. Appends only; memory stops growing at the cap."""
        if self._done or not chunk:
            return
        self.size += len(chunk)
        if not self._head_done:
            self._scan_head(chunk)
        if self.oversize:
            return
        if self.size > self.target.max_message_size:
            # From here on only the size is counted; the header block is already in `_head`.
            self.oversize = True
            self._chunks = []
            return
        self._chunks.append(chunk)

    def _scan_head(self, chunk: bytes) -> None:
        # The header block ends at the first empty line; look across the chunk boundary.
        tail = bytes(self._head[-3:])
        window = tail + chunk
        ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := window.find(sep)) >= 0]
        take = len(chunk)
        if ends:
            take = max(0, min(ends) - len(tail))
            self._head_done = True
        room = HEADER_LIMIT - len(self._head)
        self._head += chunk[: min(take, room)]
        if len(self._head) >= HEADER_LIMIT:
            self._head_done = True

    def finish(self) -> None:
        """The message ended (terminating line seen): hand the copy to the background task."""
        if self._done:
            return
        self._done = True
        # Joining is left to the background task: for a large message it is a copy of tens of
        # megabytes, which would stall every session on this event loop.
        parts = [bytes(self._head)] if self.oversize else self._chunks
        self._chunks, self._head = [], bytearray()
        self._tap.submit(
            _Copy(
                user=self.user,
                route=self.route,
                listener=self.listener,
                msgno=self.msgno,
                target=self.target,
                size=self.size,
                parts=parts,
                held=len(parts[0]) if self.oversize else self.size,
                oversize=self.oversize,
                queued_at=time.monotonic(),
            )
        )

    def abort(self) -> None:
        """The response failed or was cut off: the partial copy is discarded (nothing to send)."""
        self._done = True
        self._chunks, self._head = [], bytearray()


class Tap:
    """Turns finished captures into outbox rows; `start()`, `begin(...)`, `await close(grace)`.

    `targets` maps a route name (its match pattern) to its `TapTarget`; routes without a tap
    are absent, and `begin` returns None for them. `notify` wakes the delivery worker.
    """

    def __init__(
        self,
        targets: Mapping[str, TapTarget],
        store: Store,
        *,
        notify: Callable[[], None] | None = None,
        queue_items: int = QUEUE_ITEMS,
        queue_bytes: int = QUEUE_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.targets = dict(targets)
        self.store = store
        self.notify = notify
        self.queue_items = max(1, queue_items)
        self.queue_bytes = queue_bytes
        self.clock = clock
        self._queue: collections.deque[_Copy] = collections.deque()
        self._queued_bytes = 0
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.recorded = 0
        self.lost = 0

    def begin(self, *, user: str, route: str, listener: str, msgno: int) -> TapCapture | None:
        target = self.targets.get(route)
        if target is None or self._closing:
            return None
        return TapCapture(self, target, user=user, route=route, listener=listener, msgno=msgno)

    def submit(self, copy: _Copy) -> None:
        """Queue a finished copy, or count and log it when the queue is full or closed."""
        full = len(self._queue) >= self.queue_items or (
            self._queue and self._queued_bytes + copy.held > self.queue_bytes
        )
        if self._closing or self._task is None or full:
            why = (
                "the tap is shutting down"
                if self._closing or self._task is None
                else (
                    f"the hand-off queue is full ({len(self._queue)} copies, "
                    f"{self._queued_bytes} bytes); the store is slow or unavailable"
                )
            )
            self._lose(copy, "dropped", why)
            return
        self._queue.append(copy)
        self._queued_bytes += copy.held
        self._idle.clear()
        self._ready.set()

    def _lose(self, copy: _Copy, outcome: str, why: str) -> None:
        self.lost += 1
        _metric(copy.listener, outcome)
        log.error(
            "tap copy not recorded (the client got its message; fetch it again to copy it): %s",
            why,
            extra={
                "user": copy.user,
                "route": copy.route,
                "listener": copy.listener,
                "msgno": copy.msgno,
                "size": copy.size,
            },
        )

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="proxy-tap")

    async def close(self, grace: float = 10.0) -> None:
        """Stop taking copies, record the queued ones for up to `grace` seconds, count the rest."""
        self._closing = True
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        while self._queue:
            copy = self._queue.popleft()
            self._lose(copy, "dropped", f"not recorded within the {grace:g}s shutdown grace")
        self._queued_bytes = 0

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
                continue
            copy = self._queue[0]
            await self._record(copy)
            self._queue.popleft()
            self._queued_bytes -= copy.held

    async def _record(self, copy: _Copy) -> None:
        try:
            if copy.held > INLINE_HASH_LIMIT:
                key = await asyncio.to_thread(self._key, copy)
            else:
                key = self._key(copy)
            message = await self._build(copy, key)
        except Exception as exc:  # the mail package never raises on bad mail; this is a bug
            log.exception("tap could not build a payload")
            self._lose(copy, "failed", f"{type(exc).__name__}: {exc}")
            return
        delay = 0.5
        while True:
            try:
                await self.store.record([message], self.clock())
                break
            except StoreError as exc:
                # Keep the copy at the head of the queue; new ones queue behind it up to the
                # limits, and are counted as dropped past them.
                log.warning("tap cannot record a copy yet, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(STORE_RETRY_MAX, delay * 2)
            except Exception as exc:  # not a store outage: retrying would not help
                log.exception("tap could not record a copy")
                self._lose(copy, "failed", f"{type(exc).__name__}: {exc}")
                return
        self.recorded += 1
        _metric(copy.listener, "oversize" if copy.oversize else "recorded")
        if self.notify is not None:
            self.notify()

    def _key(self, copy: _Copy) -> _Keyed:
        """The copy's bytes and UIDL; joining and hashing (linear, but tens of megabytes for a
        big message: in a thread then)."""
        target = copy.target
        content = copy.content()
        if copy.oversize:
            reason = (
                f"message of {copy.size} bytes exceeds the tap's max_message_size "
                f"({target.max_message_size} bytes); only its headers were kept"
            )
            digest = hashlib.sha256(content + b"\0" + str(copy.size).encode())
            return _Keyed(content, "sha256-headers:" + digest.hexdigest(), reason)
        return _Keyed(content, "sha256:" + hashlib.sha256(content).hexdigest(), None)

    async def _build(self, copy: _Copy, key: _Keyed) -> NewMessage:
        """The outbox row for one copy, as the poller makes it: deferred when it can be, any
        parse needed now done by the parse workers (`isolated_row`)."""
        target = copy.target
        # The proxy never deletes (the default): the client owns the mailbox.
        return await isolated_row(
            key.content,
            account=tap_account(copy.route, copy.user),
            uidl=key.uidl,
            size=copy.size,
            webhook=target.webhook,
            now=self.clock(),
            attachment_inline_limit=target.attachment_inline_limit,
            include_raw=target.include_raw,
            oversize_reason=key.reason,
            source="proxy",
            defer=True,
            defer_any_size=target.reshaped,
            links=target.links,
        )


class _Keyed(NamedTuple):
    content: bytes  # the message, or its header block for an oversize copy
    uidl: str
    reason: str | None  # why only the headers were kept


def targets_from_settings(settings: Any, links: LinkMinter | None = None) -> dict[str, TapTarget]:
    """Route name -> TapTarget for every route with a tap; webhook options shape the payload."""
    hooks = {w.name: w for w in settings.webhooks}
    out: dict[str, TapTarget] = {}
    for route in settings.proxy.routes or []:
        if route.tap is None or route.match in out:
            continue
        hook = hooks.get(route.tap.webhook)
        out[route.match] = TapTarget(
            webhook=route.tap.webhook,
            max_message_size=int(route.tap.max_message_size),
            attachment_inline_limit=int(getattr(hook, "attachment_inline_limit", 1024 * 1024)),
            include_raw=bool(getattr(hook, "include_raw", False)),
            reshaped=str(getattr(hook, "format", "standard") or "standard") != "standard",
            links=links,
        )
    return out


@contextlib.asynccontextmanager
async def build_tap(settings: Any, *, grace: float | None = None) -> AsyncIterator[Tap | None]:
    """The running tap (store, sender, delivery worker) when some route has one, else None.

    On exit: the tap records what is queued, then the worker finishes the deliveries in flight,
    each within `grace` seconds (default `proxy.shutdown_grace`); undelivered rows stay in the
    outbox and go out on the next start, of the proxy or of a poller sharing the store.
    """
    from bridge.runtime import link_minter

    targets = targets_from_settings(settings, link_minter(settings))
    if not targets:
        yield None
        return
    from bridge.delivery.worker import DeliveryWorker
    from bridge.runtime import DeliveryRuntime, record_delivery

    wait = float(settings.proxy.shutdown_grace if grace is None else grace)
    async with DeliveryRuntime(settings) as runtime:
        worker = DeliveryWorker(
            runtime.store,
            runtime.sender,
            runtime.routes,
            holder=f"proxy-{socket.gethostname()}-{os.getpid()}",
            concurrency=runtime.delivery_concurrency,
            claim_seconds=runtime.claim_seconds,
            on_result=record_delivery,
        )
        tap = Tap(targets, runtime.store, notify=worker.notify)
        stop = asyncio.Event()
        delivering = asyncio.create_task(worker.run(stop, grace=wait), name="proxy-tap-delivery")
        tap.start()
        try:
            yield tap
        finally:
            await tap.close(wait)
            stop.set()
            await delivering

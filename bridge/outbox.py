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
import dataclasses
import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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
    "ParseLimits",
    "ParsePool",
    "build_bodies",
    "current_pool",
    "isolated_row",
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


def _build(
    spec: BodySpec, item: OutboxItem, now: float, fallback: tuple[str, bool] | None = None
) -> bytes:
    """The body of `item` under `spec`. With `fallback=(reason, minimal)` the message is not
    parsed: `mail.degraded` (headers only) or, with `minimal`, `mail.minimal` (no header read)
    stand in for its data, with `reason` in `parse_errors` and the raw message attached."""
    note = deferred_source(item.payload)
    reshape = not spec.format.standard
    if note is None:
        if not reshape:
            return item.payload
        return render(spec.format, orjson.loads(item.payload), raw=None, now=now)
    if item.raw is None:
        raise ValueError(f"outbox row {item.id} has a deferred payload but no raw message")
    source, options = _from_note(note)
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
        return _body(data, **kwargs)
    return render(spec.format, _envelope(data, **kwargs), raw=item.raw, now=now)


class ParseLimits(NamedTuple):
    """What one message may cost a parse worker: CPU seconds and address space in bytes."""

    cpu_seconds: float = 30.0
    memory: int = 2 << 30


class _OutOfTime(BaseException):
    """Raised in a worker by SIGPROF when a message has used up its CPU time (a
    BaseException, so no `except Exception` inside the parser can swallow it)."""


def _on_sigprof(signum: int, frame: object) -> None:
    raise _OutOfTime


def _init_worker(memory: int, owner: int) -> None:
    """Runs once in each worker process: the memory cap, the CPU-time alarm's handler, and a
    watch on `owner` (the bridge's pid): a worker whose bridge was SIGKILLed would otherwise
    wait on its queue for ever, holding its memory."""
    import resource
    import signal

    threading.Thread(target=_exit_with, args=(owner,), name="owner-watch", daemon=True).start()

    if memory > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory if hard == resource.RLIM_INFINITY else min(memory, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.signal(signal.SIGPROF, _on_sigprof)


def _exit_with(owner: int) -> None:
    while True:
        time.sleep(1.0)
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            os._exit(0)
        except OSError:  # alive, but not ours to signal: keep watching
            pass


@contextlib.contextmanager
def _cpu_budget(seconds: float) -> Iterator[None]:
    """`_OutOfTime` once this process has spent `seconds` of CPU inside the block.

    SIGPROF is handled between bytecodes, so a long call into C code would delay it: the
    RLIMIT_CPU soft limit is the backstop (SIGXCPU ends the worker, and the pool treats the
    message like one that killed its worker).
    """
    import resource
    import signal

    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    backstop = int(usage.ru_utime + usage.ru_stime + 2 * seconds + 5)
    if hard != resource.RLIM_INFINITY:
        backstop = min(backstop, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (backstop, hard))
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _isolated(spec: BodySpec, item: OutboxItem, now: float, cpu_seconds: float) -> bytes:
    """One body in a worker: the full parse within the CPU budget, else the degraded one."""
    try:
        with _cpu_budget(cpu_seconds):
            return _build(spec, item, now)
    except (_OutOfTime, MemoryError) as exc:
        reason = (
            f"parsing the message took more than poller.parse_timeout ({cpu_seconds:g}s of CPU)"
            if isinstance(exc, _OutOfTime)
            else "parsing the message needed more memory than a parse worker may use"
        )
    try:
        with _cpu_budget(cpu_seconds):
            return _build(spec, item, now, fallback=(reason, False))
    except (_OutOfTime, MemoryError):
        return _build(spec, item, now, fallback=(reason, True))


def build_bodies(
    items: Sequence[OutboxItem], spec: BodySpec, now: float, cpu_seconds: float = 0.0
) -> list[bytes]:
    """The body of each item under `spec`: what a parse worker process runs. With
    `cpu_seconds`, each item gets that much CPU time (`_isolated`)."""
    if cpu_seconds <= 0:
        return [_build(spec, item, now) for item in items]
    return [_isolated(spec, item, now, cpu_seconds) for item in items]


async def isolated_row(raw: bytes, **kwargs: Any) -> NewMessage:
    """`outbox_row(raw, **kwargs)`, with the parse (when the row needs one now) done by this
    process's `ParsePool` if it has one, so the event loop never parses a big message.

    The row is built as a deferred one first, and the pool builds its body exactly as it
    would at delivery (same options, the fetch time as `created_at`).
    """
    pool = current_pool()
    links = kwargs.get("links")
    linked = links is not None and 2 * len(raw) > int(kwargs["attachment_inline_limit"])
    if pool is None or kwargs.get("oversize_reason") is not None or linked:
        # An oversize row reads only capped headers. A row with attachment links is still
        # built here: its attachments' contents go to the store with it (a known gap: only
        # the cheap caps protect that path, docs/security.md).
        return outbox_row(raw, **kwargs)
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
    body = await pool.build_spec(item, spec, now)
    return dataclasses.replace(row, payload=body)


class _PoolFailed(Exception):
    """A batch got no answer from the workers: one died, or none answered in time."""


_Pending = tuple[OutboxItem, asyncio.Future[bytes]]
_current: ParsePool | None = None


def current_pool() -> ParsePool | None:
    """The open `ParsePool` of this process, if any (the poller's fetch uses it for the
    messages it builds at once: those of `DEFER_MAX` bytes or more)."""
    return _current


class ParsePool:
    """Worker processes (`poller.parse_workers`) that build webhook bodies from raw mail.

    Mail is untrusted, and parts of the stdlib parser are quadratic (bridge/mail/_limits.py),
    so the event loop, which answers /healthz and serves every other account, never parses
    it. A worker gives each message `limits.cpu_seconds` of CPU (`poller.parse_timeout`;
    SIGPROF, with RLIMIT_CPU as the backstop) in an address space capped at `limits.memory`.
    A message over either is delivered with the degraded payload: headers only, raw message
    attached, the reason in `parse_errors`.

    If a batch kills its worker (or none answers within a generous wall-clock deadline, when
    the workers are killed), the pool is restarted and the batch's messages are retried one
    by one: the one that kills a worker alone is delivered with `mail.minimal` (no header
    read at all, built here), the others normally. Each message is thus parsed at most
    twice, never in a loop, and the main process never runs the parser on it.

    Requests that arrive while a batch is with the workers are sent together as the next
    batch: a process round trip carries about ten messages (the main process's share of a
    message falls from ~0.45 to ~0.22 ms, BENCHMARKS.md), each raw message is pickled once
    and only the body comes back.
    """

    def __init__(self, workers: int, limits: ParseLimits | None = None) -> None:
        global _current
        self.workers = max(1, workers)
        self.limits = limits or ParseLimits()
        self.restarts = 0
        self._closed = False
        self._executor = self._start()
        self._queued: dict[tuple[BodySpec, float], list[_Pending]] = {}
        self._running: asyncio.Task[None] | None = None
        _current = self
        log.info("webhook bodies are parsed in %d worker process(es)", self.workers)

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        import multiprocessing  # only here: commands that parse nothing never pay for it

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["bridge.outbox"])
        executor = concurrent.futures.ProcessPoolExecutor(
            self.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self.limits.memory, os.getpid()),
        )
        # Start the workers now, while the poller logs in, rather than on the first message,
        # and from a thread: starting a forkserver takes a few hundred milliseconds (seconds
        # on a busy machine), and the executor holds a lock meanwhile that a `submit` from
        # the event loop would wait on. `_send` therefore waits for `_ready` first.
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        threading.Thread(
            target=_warm_up, args=(executor, self._ready), name="parse-pool-start", daemon=True
        ).start()
        return executor

    async def started(self, wait: float) -> None:
        """Wait (at most `wait` seconds, without blocking the loop) for the workers' launch."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await asyncio.wrap_future(self._ready)

    async def build(self, item: OutboxItem, builder: DeferredPayload) -> bytes:
        """The body `builder.body(item)` gives, built in a worker."""
        return await self.build_spec(item, builder.spec, builder.clock())

    async def build_spec(self, item: OutboxItem, spec: BodySpec, now: float) -> bytes:
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self._closed:
            done.cancel()  # shutting down: the row is built again after the restart
        else:
            # `now` only matters to delivery formats' timestamps: batch by the second.
            self._queued.setdefault((spec, float(int(now))), []).append((item, done))
            if self._running is None:
                self._running = asyncio.ensure_future(self._run())
        return await done

    async def _run(self) -> None:
        try:
            while self._queued:
                groups, self._queued = self._queued, {}
                await asyncio.gather(*(self._batch(*k, v) for k, v in groups.items()))
        finally:
            self._running = None

    async def _batch(self, spec: BodySpec, now: float, batch: list[_Pending]) -> None:
        try:
            bodies = await self._send([item for item, _ in batch], spec, now)
        except _PoolFailed:
            # One by one, so the message that kills a worker is found and the rest are built.
            for item, done in batch:
                if done.done():
                    continue
                try:
                    [body] = await self._send([item], spec, now)
                except _PoolFailed as exc:
                    log.error(
                        "a message could not be parsed (%s); delivered with its raw content "
                        "and no parsed fields",
                        exc,
                        extra={"account": item.account, "msg_id": item.msg_id},
                    )
                    try:
                        body = _build(spec, item, now, fallback=(str(exc), True))
                    except Exception as error:  # no raw message: the worker marks the row
                        done.set_exception(error)
                        continue
                if not done.done():
                    done.set_result(body)
            return
        for (_, done), body in zip(batch, bodies, strict=True):
            if not done.done():
                done.set_result(body)

    async def _send(self, items: list[OutboxItem], spec: BodySpec, now: float) -> list[bytes]:
        """One round trip; `_PoolFailed` (after restarting the pool) when it cannot answer."""
        executor, ready = self._executor, self._ready
        cpu = self.limits.cpu_seconds
        # CPU time is enforced in the worker; this only catches a worker that stopped
        # answering at all, so it allows for a machine busy with other work.
        deadline = len(items) * (3 * cpu + 5) + 30
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(deadline):
                await asyncio.wrap_future(ready)
                return await loop.run_in_executor(executor, build_bodies, items, spec, now, cpu)
        except TimeoutError:
            _kill_workers(executor)
            self._restart(executor)
            raise _PoolFailed(
                f"the parse worker did not answer within {deadline:g}s and was killed"
            ) from None
        except concurrent.futures.BrokenExecutor:
            self._restart(executor)
            raise _PoolFailed("the parse worker process died while parsing it") from None
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a bug in the worker: the message still goes out
            raise _PoolFailed(f"parsing failed ({type(exc).__name__}: {exc})") from None

    def _restart(self, broken: concurrent.futures.ProcessPoolExecutor) -> None:
        if broken is not self._executor or self._closed:
            return  # another batch restarted it already
        self.restarts += 1
        log.warning("a parse worker process died or hung; starting new ones")
        broken.shutdown(wait=False, cancel_futures=True)
        self._executor = self._start()

    def close(self) -> None:
        """Stop the workers; bodies not yet built are built again from the store next time."""
        global _current
        self._closed = True
        if _current is self:
            _current = None
        for pending in self._queued.values():
            for _, done in pending:
                if not done.done():
                    done.cancel()
        self._queued = {}
        # A worker deep in a slow message would hold the exit for up to its CPU limit (the
        # interpreter joins the pool at exit); what it was building is built again later.
        # Wait for a start in progress first: a worker launched after this would be missed,
        # and it would outlive us holding our stdout and stderr.
        with contextlib.suppress(Exception):
            self._ready.result(timeout=30)
        processes = _processes(self._executor)
        self._executor.shutdown(wait=False, cancel_futures=True)
        _kill(processes)


def _warm_up(
    executor: concurrent.futures.ProcessPoolExecutor, ready: concurrent.futures.Future[None]
) -> None:
    try:
        # `submit` returns once the worker processes are launched.
        future = executor.submit(build_bodies, [], BodySpec(0, False), 0.0)
        future.add_done_callback(_ignore_result)
    except Exception:  # noqa: S110 - a failed start shows up on the first batch
        pass
    finally:
        ready.set_result(None)


def _processes(executor: concurrent.futures.ProcessPoolExecutor) -> list[Any]:
    # The executor has no public way to stop a running call; its processes are reachable
    # (until `shutdown` forgets them).
    return list((getattr(executor, "_processes", None) or {}).values())


def _kill(processes: list[Any]) -> None:
    for process in processes:
        with contextlib.suppress(Exception):
            process.kill()


def _kill_workers(executor: concurrent.futures.ProcessPoolExecutor) -> None:
    _kill(_processes(executor))


def _ignore_result(future: concurrent.futures.Future[list[bytes]]) -> None:
    future.exception()  # a failed warm-up shows up, once, on the first real batch

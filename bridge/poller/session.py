"""One poll of one account: POP3 session -> outbox, with QUIT as the only commit.

Theory of operation
-------------------
The mailbox is the source of truth until a message is durably in the outbox, so every step is
ordered to make a crash at any point harmless:

1. Log in, read UIDL and LIST. Message numbers are used only inside this session; everything
   stored is keyed by UIDL.
2. With `on_delivered: delete`, DELE the messages the store says were delivered with a 2xx
   earlier and are still on the server. DELE only marks them: nothing happens before QUIT.
3. Work out which UIDLs are new. On first sight with `initial: new`, mark the mailbox seen
   without delivering. If the change looks like a mass re-keying (see `migration`), fetch
   headers and re-key what was already delivered instead of delivering it again.
4. RETR the new messages in mailbox order (pipelined when the server allows), build each payload
   and `record` them in bounded batches: outbox row + raw bytes + seen UIDL in one transaction
   per batch, never one per message and never the whole mailbox in memory.
5. With delete mode, wait a bounded time for the worker to deliver what was just recorded, so
   it can be DELE'd in this same session.
6. QUIT - only now, after everything RETR'd is recorded (Gmail and `EXPIRE 0` servers may drop
   a message at QUIT once it was RETR'd). Only after QUIT's +OK is `mark_deleted` called.

Any exception, cancellation included, leaves through `POP3Client.__aexit__`, which drops the
connection without QUIT: the server then changes nothing (RFC 1939 section 6).

With several replicas, `owned` says whether this replica still holds the account's lease (by its
own monotonic clock, with a margin before the expiry others see). It is checked before every
batch, before any DELE and right before QUIT; once it is false the session raises `LeaseLost`,
so the connection is dropped without QUIT and the server undoes any DELE: a replica that lost a
lease never commits a change to that mailbox. What it recorded stays recorded (recording is
idempotent per UIDL, so the new owner's copy of the same message is a no-op).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bridge import mail
from bridge.outbox import outbox_row
from bridge.poller.canary import FoundCanary, find_canary
from bridge.poller.migration import suspicious
from bridge.poller.spec import AccountSpec
from bridge.pop3.client import POP3Client
from bridge.pop3.errors import AuthenticationFailed
from bridge.store.base import NewMessage, Store

__all__ = [
    "INITIALISED",
    "LeaseLost",
    "PollReport",
    "build_payload",
    "connect_and_login",
    "poll_account",
]

log = logging.getLogger(__name__)

# A seen-UIDL marker meaning "this account has been polled before". A real UIDL is 1-70 printable
# non-space characters (RFC 1939 section 7), so a leading space can never collide. Without it,
# an account whose mailbox was emptied by deletion would look "first seen" again and
# `initial: new` would swallow its next mail.
INITIALISED = " initialised"

BATCH_MESSAGES = 100
BATCH_BYTES = 1024 * 1024
# How long a delete-mode session waits for fresh mail to be delivered so it can be DELE'd now
# rather than next poll. Bounded so a slow webhook never keeps a mailbox locked.
DELETE_WAIT = 3.0
_DELETE_POLL = 0.05

Clock = Callable[[], float]
Notify = Callable[[], None]
Owned = Callable[[], bool]


class LeaseLost(Exception):
    """This replica's lease on the account ran out during the poll; nothing was committed."""

    def __init__(self, account: str) -> None:
        super().__init__(
            f"the lease on account {account!r} ran out during the poll; the session was dropped "
            "without QUIT (no DELE took effect) and another replica now polls the account"
        )
        self.account = account


def _check(owned: Owned | None, account: str) -> None:
    if owned is not None and not owned():
        raise LeaseLost(account)


@dataclass(slots=True)
class PollReport:
    """What one poll did, for logs, metrics and `once`'s exit code."""

    account: str
    on_server: int = 0
    new: int = 0
    recorded: int = 0
    bytes_fetched: int = 0
    oversize: int = 0
    marked_initial: int = 0
    rekeyed: int = 0
    deleted: int = 0
    pruned: int = 0
    # Our own freshness canaries fetched (never recorded or delivered; DELE'd in this session),
    # with when each was fetched and its message number.
    canaries: list[tuple[FoundCanary, float]] = field(default_factory=list)
    canary_numbers: list[int] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    duration: float = 0.0


def max_answer_size(max_message_size: int) -> int:
    """The most a single multi-line answer may carry before the server is taken for hostile.

    Only messages whose LIST size is within `max_message_size` are RETR'd, and LIST counts
    the octets sent (RFC 1939 §5), so twice that plus room for line-ending differences is
    generous for an honest server and still bounds memory against a lying one. UIDL/LIST
    answers of even huge mailboxes stay far below it.
    """
    return 2 * max_message_size + 1024 * 1024


async def connect_and_login(spec: AccountSpec) -> POP3Client:
    """A logged-in client; an OAuth login refused once is retried once with a fresh token."""
    attempts = 2 if spec.token is not None else 1
    for attempt in range(attempts):
        client = await POP3Client.connect(
            spec.host,
            spec.port,
            tls=spec.tls,
            ca_file=spec.ca_file,
            insecure=spec.insecure,
            connect_timeout=spec.connect_timeout,
            read_timeout=spec.read_timeout,
            pipelining=spec.pipelining,
            max_body=max_answer_size(spec.max_message_size),
        )
        try:
            await client.login(
                spec.username,
                spec.password,
                mechanism=spec.auth,
                allow_plaintext=spec.allow_plaintext,
                token=spec.token,
            )
        except AuthenticationFailed:
            client.abort()
            if attempt + 1 < attempts and spec.invalidate_token is not None:
                # The token may have been revoked or expired early: one refresh, one retry.
                log.info("login refused, refreshing the access token", extra={"account": spec.name})
                spec.invalidate_token()
                continue
            raise
        except BaseException:
            client.abort()
            raise
        return client
    raise AssertionError("unreachable")  # pragma: no cover


def build_payload(
    spec: AccountSpec,
    uidl: str,
    size: int,
    raw: bytes,
    *,
    oversize: bool,
    now: float,
    defer: bool = False,
) -> NewMessage:
    """The outbox row for one fetched message (for an oversize one `raw` holds only headers).

    The poll defers building the body to delivery (`bridge.outbox`); `peek` does not.
    """
    reason = (
        f"message of {size} bytes exceeds max_message_size "
        f"({spec.max_message_size} bytes); only its headers were fetched"
        if oversize
        else None
    )
    return outbox_row(
        raw,
        account=spec.name,
        uidl=uidl,
        size=size,
        webhook=spec.webhook,
        now=now,
        attachment_inline_limit=spec.fetch.attachment_inline_limit,
        include_raw=spec.fetch.include_raw,
        oversize_reason=reason,
        delete_after_delivery=spec.on_delivered == "delete",
        defer=defer,
        defer_any_size=spec.fetch.reshaped,
        options=spec.fetch.options,
    )


async def poll_account(
    spec: AccountSpec,
    store: Store,
    *,
    clock: Clock = time.time,
    notify: Notify | None = None,
    delete_wait: float = DELETE_WAIT,
    stopping: Callable[[], bool] | None = None,
    owned: Owned | None = None,
) -> PollReport:
    """Poll `spec` once (see the module docstring). Raises the POP3/store error that stopped it.

    `notify` wakes the delivery worker after each recorded batch. `stopping` is checked between
    batches: when it turns true, what is recorded so far is committed with QUIT and the rest is
    left for the next poll. `owned` (leases on) is checked before each batch, DELE and QUIT;
    `LeaseLost` is raised once it is false.
    """
    report = PollReport(spec.name, started_at=clock())
    start = time.monotonic()
    _check(owned, spec.name)
    client = await connect_and_login(spec)
    async with client:
        await _session(client, spec, store, report, clock, notify, delete_wait, stopping, owned)
    report.duration = time.monotonic() - start
    return report


async def _session(
    client: POP3Client,
    spec: AccountSpec,
    store: Store,
    report: PollReport,
    clock: Clock,
    notify: Notify | None,
    delete_wait: float,
    stopping: Callable[[], bool] | None,
    owned: Owned | None = None,
) -> None:
    account = spec.name
    listing = await client.uidl()
    number_of: dict[str, int] = {}
    for n, uidl in listing:
        # Identical header-derived ids (servers without UIDL) would alias: first one wins and
        # the copies wait for a later poll once the first is gone.
        number_of.setdefault(uidl, n)
    report.on_server = len(number_of)

    seen = await store.seen_uidls(account)
    first_sight = INITIALISED not in seen
    seen.discard(INITIALISED)

    to_delete: dict[str, int] = {}
    if spec.on_delivered == "delete":
        to_delete = await _delete_delivered(client, store, spec, number_of, clock, owned)

    new = [(n, u) for u, n in number_of.items() if u not in seen and u not in to_delete]
    new.sort()

    if first_sight:
        if spec.initial == "new" and new:
            pairs = await _fingerprints(client, new)
            await store.mark_seen(account, [*pairs, (INITIALISED, "")], clock())
            report.marked_initial = len(new)
            log.info(
                "first poll with initial=new: %d existing messages marked seen, not delivered",
                len(new),
                extra={"account": account},
            )
            new = []
        else:
            await store.mark_seen(account, [(INITIALISED, "")], clock())
    elif new and suspicious(list(number_of), seen, [u for _, u in new]):
        new = await _rekey(client, store, spec, new, report, clock)

    report.new = len(new)
    # Sizes matter only for what is fetched: an idle poll skips LIST (one round trip fewer).
    sizes = dict(await client.list()) if new else {}

    def halt() -> bool:
        # Stop fetching on shutdown, or once the lease is gone (QUIT is then refused below).
        return (stopping is not None and stopping()) or (owned is not None and not owned())

    recorded = await _fetch_and_record(client, spec, store, new, sizes, report, clock, notify, halt)
    if report.canary_numbers:
        # Canaries are ours: removed even with `on_delivered: keep`. Not recorded anywhere, so a
        # QUIT that does not commit just means the next poll fetches and deletes them again.
        _check(owned, account)
        await client.delete_many(sorted(report.canary_numbers))

    if spec.on_delivered == "delete" and recorded and delete_wait > 0:
        more = await _wait_delivered(store, spec, recorded, number_of, to_delete, delete_wait)
        if more:
            _check(owned, account)
            await client.delete_many(sorted(more.values()))
            to_delete.update(more)

    _check(owned, account)
    await client.quit()
    now = clock()
    if to_delete:
        await store.mark_deleted(account, list(to_delete), now)
        report.deleted = len(to_delete)
        log.info("deleted %d delivered messages", len(to_delete), extra={"account": account})
    present = [u for u in number_of if u not in to_delete]
    present.append(INITIALISED)
    # Only UIDLs seen before this poll can have left the server (what this poll recorded is
    # on it), so when all of those are still listed there is nothing to prune: skip the write.
    if not seen.issubset(present) or to_delete:
        report.pruned = await store.forget_missing(account, present)


async def _delete_delivered(
    client: POP3Client,
    store: Store,
    spec: AccountSpec,
    number_of: dict[str, int],
    clock: Clock,
    owned: Owned | None = None,
) -> dict[str, int]:
    deletable = await store.deletable_uidls(spec.name)
    if not deletable:
        return {}
    here = {u: number_of[u] for u in deletable if u in number_of}
    gone = [u for u in deletable if u not in number_of]
    if gone:
        # Removed by someone else (another client, server expiry): nothing left to delete.
        await store.mark_deleted(spec.name, gone, clock())
    if here:
        _check(owned, spec.name)
        await client.delete_many(sorted(here.values()))
    return here


async def _fingerprints(
    client: POP3Client, messages: Sequence[tuple[int, str]]
) -> list[tuple[str, str]]:
    """(uidl, fingerprint) from `TOP n 0`, in bounded chunks so headers never pile up."""
    pairs: list[tuple[str, str]] = []
    for start in range(0, len(messages), BATCH_MESSAGES):
        chunk = messages[start : start + BATCH_MESSAGES]
        for n, uidl in chunk:
            # One round trip each: the client has no public pipelined TOP yet. This path only
            # runs on first sight (`initial: new`) and on a suspected migration.
            pairs.append((uidl, mail.fingerprint(await client.top(n, 0))))
    return pairs


async def _rekey(
    client: POP3Client,
    store: Store,
    spec: AccountSpec,
    new: list[tuple[int, str]],
    report: PollReport,
    clock: Clock,
) -> list[tuple[int, str]]:
    pairs = await _fingerprints(client, new)
    known = await store.known_fingerprints(spec.name, {fp for _, fp in pairs})
    matched = [(u, fp) for u, fp in pairs if fp in known]
    if not matched:
        return new
    await store.mark_seen(spec.name, matched, clock())
    report.rekeyed = len(matched)
    log.warning(
        "mailbox UIDLs changed en masse (server migration or UIDVALIDITY reset?): %d of %d "
        "'new' messages were already delivered under other UIDLs; re-keyed without re-delivery",
        len(matched),
        len(new),
        extra={"account": spec.name, "rekeyed": len(matched), "new": len(new)},
    )
    done = {u for u, _ in matched}
    return [(n, u) for n, u in new if u not in done]


async def _fetch_and_record(
    client: POP3Client,
    spec: AccountSpec,
    store: Store,
    new: list[tuple[int, str]],
    sizes: dict[int, int],
    report: PollReport,
    clock: Clock,
    notify: Notify | None,
    stopping: Callable[[], bool] | None,
) -> list[str]:
    """RETR (or TOP for oversize) in mailbox order and record in batches; returns the UIDLs."""
    recorded: list[str] = []
    batch: list[NewMessage] = []
    batch_bytes = 0
    key = spec.canary_key
    # One batch is recorded while the next is fetched: the store's commit would otherwise
    # leave the POP3 link idle (it was about a third of the fetch). Batches commit in order,
    # and none is pending when this returns (QUIT, deletion and `recorded` come after).
    writing: asyncio.Task[None] | None = None

    async def commit(taken: list[NewMessage]) -> None:
        await store.record(taken, clock())
        recorded.extend(m.uidl for m in taken)
        report.recorded += len(taken)
        if notify is not None:
            notify()

    async def settle() -> None:
        nonlocal writing
        if writing is not None:
            task, writing = writing, None
            await task

    async def flush() -> None:
        nonlocal batch, batch_bytes, writing
        if batch:
            await settle()
            taken, batch, batch_bytes = batch, [], 0
            writing = asyncio.create_task(commit(taken))

    try:
        # Runs of normal messages go through one pipelined RETR batch; an oversize message breaks
        # the run and is fetched with TOP n 0 on its own.
        position = 0
        while position < len(new):
            if stopping is not None and stopping():
                break
            n, uidl = new[position]
            size = sizes.get(n, 0)
            if size > spec.max_message_size:
                headers = await client.top(n, 0)
                batch.append(build_payload(spec, uidl, size, headers, oversize=True, now=clock()))
                report.oversize += 1
                batch_bytes += len(headers)
                position += 1
            else:
                run: list[tuple[int, str]] = []
                run_bytes = 0
                while position < len(new) and len(run) < BATCH_MESSAGES and run_bytes < BATCH_BYTES:
                    rn, ru = new[position]
                    if sizes.get(rn, 0) > spec.max_message_size:
                        break
                    run.append((rn, ru))
                    run_bytes += sizes.get(rn, 0)
                    position += 1
                uidl_of = dict(run)
                async for rn, raw in client.retrieve_many([rn for rn, _ in run]):
                    report.bytes_fetched += len(raw)
                    if key is not None and (found := find_canary(raw, spec.name, key)):
                        report.canaries.append((found, clock()))
                        report.canary_numbers.append(rn)
                        continue
                    batch.append(
                        build_payload(
                            spec,
                            uidl_of[rn],
                            len(raw),
                            raw,
                            oversize=False,
                            now=clock(),
                            defer=True,
                        )
                    )
                    batch_bytes += len(raw)
            if len(batch) >= BATCH_MESSAGES or batch_bytes >= BATCH_BYTES:
                await flush()
            # Give the delivery worker (which parses) and other sessions a turn.
            await asyncio.sleep(0)
        await flush()
        await settle()
    except BaseException:
        if writing is not None:
            # What was fetched in full is still made durable; a failure of that is secondary
            # to the error already on its way.
            with contextlib.suppress(Exception):
                await writing
        raise
    return recorded


async def _wait_delivered(
    store: Store,
    spec: AccountSpec,
    recorded: list[str],
    number_of: dict[str, int],
    already: dict[str, int],
    wait: float,
) -> dict[str, int]:
    """UIDLs (-> numbers) of this session's messages delivered within `wait` seconds."""
    wanted = {u for u in recorded if u in number_of and u not in already}
    ready: set[str] = set()
    deadline = time.monotonic() + wait
    while True:
        ready = wanted.intersection(await store.deletable_uidls(spec.name))
        if ready == wanted or time.monotonic() >= deadline:
            break
        await asyncio.sleep(_DELETE_POLL)
    return {u: number_of[u] for u in ready}

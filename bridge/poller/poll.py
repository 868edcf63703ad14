"""One poll of one account: POP3 session -> outbox, with QUIT as the only commit.

Theory of operation
-------------------
The mailbox is the source of truth until a message is durably in the outbox, so every step is
ordered to make a crash at any point harmless:

1. Log in, read UIDL and LIST. Message numbers are used only inside this session; everything
   stored is keyed by UIDL.
2. With `on_delivered: delete`, DELE the messages the store says were delivered with a 2xx
   earlier and are still on the server. DELE only marks them: nothing happens before QUIT.
3. Work out which UIDLs are new. The store's polled flag tells a first poll from later ones (an
   emptied mailbox is not new); on the first with `initial: new`, mark the mailbox seen
   without delivering. If the change looks like a mass re-keying (see `migration`), fetch
   headers and re-key what was already delivered instead of delivering it again.
4. RETR the new messages in mailbox order (pipelined when the server allows), build each payload
   and `record` them in bounded batches: outbox row + raw bytes + seen UIDL in one transaction
   per batch, never one per message and never the whole mailbox in memory.
5. With delete mode, wait a bounded time for the worker to deliver what was just recorded, so
   it can be DELE'd in this same session (woken by the worker's `Deliveries`, not by asking the
   store again and again).
6. QUIT - only now, after everything RETR'd is recorded (Gmail and `EXPIRE 0` servers may drop
   a message at QUIT once it was RETR'd). Only after QUIT's +OK is `mark_deleted` called.

Step 4 is `bridge.poller.fetch` (`Fetcher`), the login `bridge.poller.login` and the report
`bridge.poller.report`; this module orders the steps and owns the session's deadline.

Step 3 reads the store's seen set, except when a `SeenMemo` (the scheduler keeps one per account
loop) already shows every listed UIDL as seen: an idle poll of a mailbox that keeps its mail
then never touches the store (see `SeenMemo` for why that cannot skip a message).

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from bridge import mail
from bridge.delivery.ids import msg_id_for
from bridge.delivery.worker import Deliveries
from bridge.poller.fetch import (
    BATCH_MESSAGES,
    MIN_TRANSFER_RATE,
    Fetcher,
    account_outbox_row,
    retr_deadline,
)
from bridge.poller.listing import checked_listing, deletable_now
from bridge.poller.login import connect_and_login, max_answer_size
from bridge.poller.migration import relisted, suspicious
from bridge.poller.report import PollReport
from bridge.poller.spec import AccountSpec
from bridge.pop3.client import CapaMemo, POP3Client
from bridge.pop3.errors import ReadTimeout
from bridge.store.base import CustodyEvent, Store

# What other modules import from here; `account_outbox_row`, `connect_and_login`,
# `max_answer_size`, `retr_deadline` and `PollReport` live in `fetch`, `login` and `report`.
__all__ = [
    "LeaseLost",
    "PollReport",
    "SeenMemo",
    "account_outbox_row",
    "connect_and_login",
    "max_answer_size",
    "poll_account",
    "retr_deadline",
]

log = logging.getLogger(__name__)

# Steps of a session before its fetch, each bounded by read_timeout: STAT, UIDL (with the
# TOP n 0 fallback), LIST, the delete-mode DELEs, QUIT, plus slack for the store.
SESSION_STEPS = 8


def session_budget(read_timeout: float, delete_wait: float) -> float:
    """A session's deadline before LIST says what it will fetch (`_Poll.extend` adds that)."""
    return SESSION_STEPS * read_timeout + delete_wait


# How long a delete-mode session waits for fresh mail to be delivered so it can be DELE'd now
# rather than next poll. Bounded so a slow webhook never keeps a mailbox locked.
DELETE_WAIT = 3.0

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
class SeenMemo:
    """UIDLs this process knows the store holds as seen for one account, kept between polls.

    At 10,000 idle accounts polled every minute the seen-set read was one trip through the
    database thread per poll (about 0.1 ms of CPU each); with the memo an idle poll makes none.
    The rule that keeps it safe: a UIDL enters `uidls` only once the store has committed it as
    seen (read from it, or recorded, marked or re-keyed by this process's poll), and the store
    never forgets a seen UIDL the server still lists (`forget_missing` drops only ids missing
    from the listing). So while the listing is a subset of `uidls`, nothing on the server is
    new and the store would say the same; as soon as one listed id is not in it, the poll
    reads the store as before. Entries may be missing (another replica recorded the message;
    the poll then reads the store and finds it), never wrong for a listed id. `uidls` is None
    until the account's first successful poll in this process (its polled flag is then known
    to be set), and again after a prune that left rows in the store (their messages still
    unfinished), so that the next poll reads the store and prunes them once they are done.
    """

    uidls: frozenset[str] | None = None


async def poll_account(
    spec: AccountSpec,
    store: Store,
    *,
    clock: Clock = time.time,
    notify: Notify | None = None,
    deliveries: Deliveries | None = None,
    delete_wait: float = DELETE_WAIT,
    stopping: Callable[[], bool] | None = None,
    owned: Owned | None = None,
    memo: SeenMemo | None = None,
    capa: CapaMemo | None = None,
) -> PollReport:
    """Poll `spec` once (see the module docstring). Raises the POP3/store error that stopped it.

    `notify` wakes the delivery worker after each recorded batch; in delete mode the session
    waits up to `delete_wait` on `deliveries` (the worker's) to DELE what it just recorded
    (without it, that waits for the next poll). `stopping` is checked between batches: when it
    turns true, what is recorded so far is committed with QUIT and the rest is left for the
    next poll. `owned` (leases on) is checked before each batch, DELE and QUIT; `LeaseLost` is
    raised once it is false. `memo` (`SeenMemo`) stands in for the store's seen set while it
    covers the listing, and is brought up to date after a successful poll. `capa` (a
    `CapaMemo`) lets the session skip the CAPA before login; it is forgotten when the poll
    fails in any way, so the next session asks again.
    """
    report = PollReport(spec.name, started_at=clock())
    start = time.monotonic()
    _check(owned, spec.name)
    try:
        # STAT and UIDL (`_Poll.run`'s first call) may ride with the login's last line.
        client = await connect_and_login(spec, report, capa, listing=True)
        async with client:
            poll = _Poll(
                client, spec, store, report, clock, notify, deliveries, stopping, owned, memo
            )
            # One deadline for the whole session, sized once LIST says what is to be fetched
            # (`_Poll.extend`): per-read timeouts alone let a trickling server hold it for ever.
            loop = asyncio.get_running_loop()
            budget = poll.allowed = session_budget(spec.read_timeout, delete_wait)
            try:
                async with asyncio.timeout_at(loop.time() + budget) as poll.deadline:
                    await poll.run(delete_wait)
            except TimeoutError:
                client.abort()  # no QUIT: nothing is committed on the server
                raise ReadTimeout(
                    f"the poll session took longer than its deadline ({poll.allowed:.0f}s: "
                    "read_timeout per step plus the messages' size at "
                    f"{MIN_TRANSFER_RATE // 1024} KiB/s); the session was dropped"
                ) from None
    except BaseException:
        if capa is not None:
            capa.caps = None  # whatever went wrong, the next session asks CAPA again
        raise
    report.duration = time.monotonic() - start
    return report


@dataclass(slots=True)
class _Poll:
    """One session's state: what the server lists, what the store knows, what this poll did."""

    client: POP3Client
    spec: AccountSpec
    store: Store
    report: PollReport
    clock: Clock
    notify: Notify | None
    deliveries: Deliveries | None
    stopping: Callable[[], bool] | None
    owned: Owned | None
    memo: SeenMemo | None
    # The session's deadline (poll_account) and the seconds it allows so far.
    deadline: asyncio.Timeout | None = None
    allowed: float = 0.0
    # UIDL -> message number, for this session only.
    number_of: dict[str, int] = field(default_factory=dict)
    # Seen before this poll (the store's seen set, or the memo's when it covers the listing).
    seen: set[str] | frozenset[str] = field(default_factory=set)
    # UIDLs this poll committed as seen: recorded, marked on a first poll, re-keyed.
    added: set[str] = field(default_factory=set)
    # UIDL -> number DELE'd in this session, committed by QUIT.
    to_delete: dict[str, int] = field(default_factory=dict)
    # Delivered UIDL stored by an earlier release -> the header id it is DELE'd under now;
    # `relisted`: every header id found so (never fetched again, DELE'd or held back).
    moved: dict[str, str] = field(default_factory=dict)
    relisted: set[str] = field(default_factory=set)
    # UIDLs this session recorded (`fetch.Fetcher`).
    recorded: list[str] = field(default_factory=list)
    # Seen UIDLs no longer listed, handed to the store's prune after QUIT.
    pruned: frozenset[str] = frozenset()

    @property
    def account(self) -> str:
        return self.spec.name

    def check(self) -> None:
        _check(self.owned, self.account)

    def halted(self) -> bool:
        """Stop fetching on shutdown, or once the lease is gone (QUIT is then refused)."""
        return (self.stopping is not None and self.stopping()) or (
            self.owned is not None and not self.owned()
        )

    async def run(self, delete_wait: float) -> None:
        client, report = self.client, self.report
        # STAT first: its count bounds the UIDL answer and the numbers in it
        # (bridge.poller.listing; a hostile listing is a protocol error, not 100,000 rows).
        # One write when the server pipelines (with the CAPA the login owes: see
        # `connect_and_login`), whose LOGIN-DELAY, when it gives one, is the one that counts.
        (count, _), listing = await client.stat_uidl(header_id=mail.header_uid)
        if (delay := client.login_delay) is not None:
            report.login_delay = delay
        self.number_of = await checked_listing(listing, count, self.account, self.fingerprints)
        report.on_server = len(self.number_of)

        known = self.memo.uidls if self.memo is not None else None
        if known is not None and known.issuperset(self.number_of):
            self.seen, polled = known, True
        else:
            state = await self.store.seen_state(self.account)
            self.seen, polled = state.uidls, state.polled
        if self.spec.on_delivered == "delete":
            await self.delete_delivered()

        new = sorted(
            (n, u)
            for u, n in self.number_of.items()
            if u not in self.seen and u not in self.to_delete and u not in self.relisted
        )
        if new:  # first sight and re-keying read TOP n 0 of each new message
            self.extend(self.spec.read_timeout * (len(new) // BATCH_MESSAGES + 1))
        if not polled:
            new = await self.first_poll(new)
        elif new and suspicious(
            # Ids found relisted (delete_delivered) are part of the same mass change.
            list(self.number_of),
            self.seen,
            [*(u for _, u in new), *self.relisted],
        ):
            new = await self.rekey(new)

        report.new = len(new)
        # Sizes matter only for what is fetched: an idle poll skips LIST (one round trip
        # fewer), and the deadline's extension and the fetch with it.
        if new:
            sizes = dict(await client.list())
            fetched = [sizes.get(n, 0) for n, _ in new]
            self.extend(
                retr_deadline(
                    self.spec.read_timeout,
                    sum(min(f, self.spec.max_message_size) for f in fetched),
                )
                + self.spec.read_timeout * (len(new) // BATCH_MESSAGES + 1)
            )
            fetcher = Fetcher(
                client, self.spec, self.store, report, self.clock, self.notify, self.halted
            )
            fetcher.extend = self.extend  # time the parse workers take is not the server's
            await fetcher.run(new, sizes)
            self.recorded = fetcher.recorded
            self.added.update(fetcher.recorded)
        if report.canary_numbers:
            # Canaries are ours: removed even with `on_delivered: keep`. Not recorded anywhere,
            # so a QUIT that does not commit just means the next poll fetches and deletes them.
            self.check()
            await client.delete_many(sorted(report.canary_numbers))

        if self.spec.on_delivered == "delete" and self.recorded and delete_wait > 0:
            more = await self.wait_delivered(delete_wait)
            if more:
                self.check()
                await self.note_dele(more)
                await client.delete_many(sorted(more.values()))
                self.to_delete.update(more)

        self.check()
        # A session that sent no RETR and no DELE commits nothing at QUIT (an idle poll): its
        # reply is not waited for (`POP3Client.quit`). Any other waits for the +OK, which is
        # what lets `after_quit` record the deletions.
        await client.quit(confirm=bool(new or self.to_delete or report.canary_numbers))
        kept = await self.after_quit()
        if self.memo is not None:
            self.memo.uidls = None if kept else self.seen_now()

    async def after_quit(self) -> bool:
        """Record the DELEs QUIT committed and prune the seen set; True when the prune had to
        keep seen UIDLs the server no longer lists (their messages are not finished yet)."""
        now = self.clock()
        if self.to_delete:
            await self.store.mark_deleted(
                self.account, [*self.to_delete, *self.moved], now, self.report.session
            )
            self.report.deleted = len(self.to_delete)
            log.info(
                "deleted %d delivered messages",
                len(self.to_delete),
                extra={"account": self.account},
            )
        present = [u for u in self.number_of if u not in self.to_delete]
        # Only UIDLs seen before this poll can have left the server (what this poll recorded is
        # on it), so when all of those are still listed there is nothing to prune: skip the write.
        if not self.seen.issubset(present) or self.to_delete:
            listed = set(present)
            self.pruned = frozenset(u for u in (*self.seen, *self.added) if u not in listed)
            self.report.pruned = await self.store.forget_missing(self.account, present)
            return self.report.pruned < len(self.pruned)
        return False

    def seen_now(self) -> frozenset[str]:
        """The store's seen set after this poll, as far as it is known (`SeenMemo`)."""
        if not self.added and not self.pruned and isinstance(self.seen, frozenset):
            return self.seen  # an idle poll: nothing changed
        return frozenset(self.seen | self.added) - self.pruned

    async def delete_delivered(self) -> None:
        """DELE what was delivered with a 2xx before this session (committed by QUIT)."""
        deletable = await self.store.deletable_uidls(self.account)
        if not deletable:
            return
        due = {u: self.number_of[u] for u in deletable if u in self.number_of}
        gone = [u for u in deletable if u not in self.number_of]
        if gone and self.client.uidl_fallback:
            # Ids an earlier release gave mail on a server without UIDL: the same messages
            # are listed under new header ids now (poller.migration.relisted).
            stored = await self.store.fingerprints_of(self.account, gone)
            moved = relisted(stored, self.number_of, self.seen, due)
            for old, new in list(moved.items()):
                # A known header id stands in only if it has no row of its own (it was
                # re-keyed): every recorded message has a trail until long after delivery.
                if new in self.seen and await self.store.custody_trail(
                    msg_id_for(self.account, new)
                ):
                    del moved[old]
            self.relisted = set(moved.values())
            due.update({new: self.number_of[new] for new in self.relisted})
            gone = [u for u in gone if u not in moved]
        else:
            moved = {}
        # Part of a group sharing one id may have to wait for the rest (listing.deletable_now).
        here = deletable_now(self.number_of, due)
        if len(here) < len(due):
            log.info(
                "%d delivered message(s) stay until the later messages sharing their UIDL are "
                "delivered too (deleting them first would move those onto their ids)",
                len(due) - len(here),
                extra={"account": self.account},
            )
        self.moved = {old: new for old, new in moved.items() if new in here}
        if gone:
            # Removed by someone else (another client, server expiry): nothing left to delete.
            await self.store.mark_deleted(
                self.account, gone, self.clock(), self.report.session, vanished=True
            )
        if here:
            self.check()
            listed_as = set(self.moved.values())
            await self.note_dele([*(u for u in here if u not in listed_as), *self.moved])
            await self.client.delete_many(sorted(here.values()))
        self.to_delete = here

    async def note_dele(self, uidls: Iterable[str]) -> None:
        """The custody trail's `dele_sent`, written before the DELEs go out: whether they took
        effect shows as `deleted` (after QUIT +OK) or its absence."""
        account, session, now = self.account, self.report.session, self.clock()
        await self.store.add_custody(
            [
                CustodyEvent(msg_id_for(account, u), account, u, now, "dele_sent", session=session)
                for u in uidls
            ]
        )

    async def first_poll(self, new: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """Flag the account as polled; with `initial: new` its existing mail is seen, not sent."""
        if self.spec.initial != "new" or not new:
            await self.store.mark_polled(self.account, [], self.clock())
            return new
        pairs = await self.fingerprints(new)
        await self.store.mark_polled(self.account, pairs, self.clock())
        self.added.update(u for u, _ in pairs)
        self.report.marked_initial = len(new)
        log.info(
            "first poll with initial=new: %d existing messages marked seen, not delivered",
            len(new),
            extra={"account": self.account},
        )
        return []

    async def fingerprints(self, messages: Sequence[tuple[int, str]]) -> list[tuple[str, str]]:
        """(uidl, fingerprint) from pipelined `TOP n 0`, in bounded chunks so headers never
        pile up. Runs on first sight (`initial: new`) and on a suspected migration."""
        pairs: list[tuple[str, str]] = []
        for start in range(0, len(messages), BATCH_MESSAGES):
            chunk = messages[start : start + BATCH_MESSAGES]
            uidl_of = dict(chunk)
            async for n, headers in self.client.top_many([n for n, _ in chunk], 0):
                pairs.append((uidl_of[n], mail.fingerprint(headers)))
        return pairs

    async def rekey(self, new: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """Messages already delivered under other UIDLs (a mass re-keying) are seen, not sent."""
        pairs = await self.fingerprints(new)
        known = await self.store.known_fingerprints(self.account, {fp for _, fp in pairs})
        matched = [(u, fp) for u, fp in pairs if fp in known]
        if not matched:
            return new
        await self.store.mark_seen(self.account, matched, self.clock())
        self.added.update(u for u, _ in matched)
        self.report.rekeyed = len(matched)
        log.warning(
            "mailbox UIDLs changed en masse (server migration or UIDVALIDITY reset?): %d of %d "
            "'new' messages were already delivered under other UIDLs; re-keyed without "
            "re-delivery",
            len(matched),
            len(new),
            extra={"account": self.account, "rekeyed": len(matched), "new": len(new)},
        )
        done = {u for u, _ in matched}
        return [(n, u) for n, u in new if u not in done]

    def extend(self, seconds: float) -> None:
        """Move the session's deadline `seconds` later (once the work ahead is known)."""
        self.allowed += seconds
        when = self.deadline.when() if self.deadline is not None else None
        if self.deadline is not None and when is not None:
            self.deadline.reschedule(when + seconds)

    # -- delete mode -----------------------------------------------------------------------
    async def wait_delivered(self, wait: float) -> dict[str, int]:
        """UIDLs (-> numbers) of this session's messages delivered within `wait` seconds.

        Woken by the worker's `Deliveries` for this account; the store stays the judge of what
        was delivered with a 2xx.
        """
        deliveries = self.deliveries
        wanted = {u for u in self.recorded if u in self.number_of and u not in self.to_delete}
        if deliveries is None or not wanted:
            return {}
        ready: set[str] = set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            count = deliveries.count(self.account)
            ready = wanted.intersection(await self.store.deletable_uidls(self.account))
            remaining = deadline - loop.time()
            if ready == wanted or remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await deliveries.wait(self.account, count)
        # What this session DELEs already leaves with them (listing.deletable_now).
        due = {**self.to_delete, **{u: self.number_of[u] for u in ready}}
        return {u: n for u, n in deletable_now(self.number_of, due).items() if u in ready}

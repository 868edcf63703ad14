"""Fetching a session's new messages and recording them in the outbox, in bounded batches.

`Fetcher.run` is step 4 of `bridge.poller.poll` (see its theory of operation): RETR in mailbox
order, pipelined where the server allows, a payload row built for each message, and every batch
recorded (outbox row + raw bytes + seen UIDL, one transaction) while the next is fetched. What
it has recorded when it returns is durable; the session QUITs only after that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from bridge.outbox import DeferredRows, current_pool, isolated_row, parsed_from
from bridge.poller.canary import find_canary
from bridge.poller.report import PollReport
from bridge.poller.spec import AccountSpec
from bridge.pop3.client import POP3Client
from bridge.pop3.errors import ReadTimeout
from bridge.store.base import NewMessage, Store

__all__ = [
    "BATCH_BYTES",
    "BATCH_MESSAGES",
    "DEADLINE_CREDIT",
    "GROUP_BYTES",
    "GROUP_MESSAGES",
    "MIN_TRANSFER_RATE",
    "Fetcher",
    "account_outbox_row",
    "deferred_account_rows",
    "retr_deadline",
]

BATCH_MESSAGES = 100
BATCH_BYTES = 1024 * 1024
# While the store is still committing one group, the batches fetched meanwhile gather into the
# next group, up to this much, and go in one transaction once it is done (a group commit): a
# slow commit (a WAL checkpoint's fsyncs) no longer stops the fetch, and a busy store gets
# fewer, larger transactions. Past this the fetch waits for the store, so what is held in
# memory stays bounded.
GROUP_MESSAGES = 1000
GROUP_BYTES = 8 * 1024 * 1024
# The slowest transfer a RETR is allowed: its deadline is read_timeout plus its announced
# size at this rate (issue 19: a body trickling a line a second never ended the poll).
MIN_TRANSFER_RATE = 16 * 1024
# Row-building time is given back to a RETR run's deadline once this much of it has gathered,
# not per message (a reschedule cost about half of what building a deferred row does): the
# deadline is then at most this much earlier than the exact count, of a read_timeout's worth.
DEADLINE_CREDIT = 0.01


def retr_deadline(read_timeout: float, octets: int) -> float:
    """Seconds a pipelined RETR of `octets` announced octets may take in all."""
    return read_timeout + octets / MIN_TRANSFER_RATE


async def account_outbox_row(
    spec: AccountSpec,
    uidl: str,
    size: int,
    raw: bytes,
    *,
    oversize: bool,
    now: float,
    defer: bool = False,
    session: str | None = None,
) -> NewMessage:
    """The outbox row for one fetched message (for an oversize one `raw` holds only headers).

    The poll defers building the body to delivery (`bridge.outbox`) and mints attachment
    links; `peek` does neither (it prints bodies and records nothing).
    """
    reason = (
        f"message of {size} bytes exceeds max_message_size "
        f"({spec.max_message_size} bytes); only its headers were fetched"
        if oversize
        else None
    )
    return await isolated_row(
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
        links=spec.fetch.links if defer else None,
        session=session,
    )


def deferred_account_rows(spec: AccountSpec, session: str | None) -> DeferredRows:
    """What builds `account_outbox_row(spec, uidl, len(raw), raw, oversize=False, defer=True,
    session=session, ...)` for each message that `parsed_at_fetch` leaves to delivery (most
    mail): the same rows, built without that function's dispatch, since the fetch stage builds
    one per message it reads (call it with `(uidl, raw, len(raw))`)."""
    return DeferredRows.of(
        account=spec.name,
        webhook=spec.webhook,
        delete_after_delivery=spec.on_delivered == "delete",
        options=spec.fetch.options,
        session=session,
    )


@dataclass(slots=True)
class Fetcher:
    """One session's fetch: the batch being fetched and the previous one being recorded."""

    client: POP3Client
    spec: AccountSpec
    store: Store
    report: PollReport
    clock: Callable[[], float]
    notify: Callable[[], None] | None
    # True once the session must stop fetching (shutdown, or the account's lease is gone).
    halted: Callable[[], bool]
    batch: list[NewMessage] = field(default_factory=list)
    batch_bytes: int = 0
    writing: asyncio.Task[None] | None = None
    # UIDLs recorded (committed) so far, in order.
    recorded: list[str] = field(default_factory=list)
    # Moves the session's deadline later: by the time spent waiting for rows parsed now, so a
    # mailbox of slow-to-parse mail (each within poller.parse_timeout) still makes progress
    # (the parse workers' own allowance bounds that wait).
    extend: Callable[[float], None] | None = None
    # Builds this session's deferred rows (`deferred_rows`).
    builder: DeferredRows | None = None

    async def run(self, new: list[tuple[int, str]], sizes: dict[int, int]) -> None:
        """RETR (or TOP for oversize) in mailbox order and record in batches (`recorded`).

        One group is recorded while the next is fetched: the store's commit would otherwise
        leave the POP3 link idle (it was about a third of the fetch). Groups commit in order,
        and none is pending when this returns (QUIT, deletion and `recorded` come after).
        """
        if new and (pool := current_pool()) is not None:
            # New mail will be parsed (here for big messages and links, else at delivery):
            # the parse workers start now, while the messages are read (`ParsePool.warm`).
            pool.warm()
        try:
            # Runs of normal messages go through one pipelined RETR batch; an oversize message
            # breaks the run and is fetched with TOP n 0 on its own.
            position = 0
            while position < len(new) and not self.halted():
                n, uidl = new[position]
                if sizes.get(n, 0) > self.spec.max_message_size:
                    await self.fetch_oversize(n, uidl, sizes[n])
                    position += 1
                else:
                    run: list[tuple[int, str]] = []
                    run_bytes = 0
                    while (
                        position < len(new)
                        and len(run) < BATCH_MESSAGES
                        and run_bytes < BATCH_BYTES
                    ):
                        rn, ru = new[position]
                        if sizes.get(rn, 0) > self.spec.max_message_size:
                            break
                        run.append((rn, ru))
                        run_bytes += sizes.get(rn, 0)
                        position += 1
                    await self.fetch_run(run, run_bytes)
                if len(self.batch) >= BATCH_MESSAGES or self.batch_bytes >= BATCH_BYTES:
                    await self.flush()
                # Give the delivery worker (which parses) and other sessions a turn.
                await asyncio.sleep(0)
            await self.flush(last=True)
            await self.settle()
        except BaseException:
            # What was fetched in full is still made durable: the group being committed and
            # the one gathered behind it. A failure of that is secondary to the error already
            # on its way.
            with contextlib.suppress(Exception):
                await self.settle()
                if self.batch:
                    taken, self.batch, self.batch_bytes = self.batch, [], 0
                    await self.commit(taken)
            raise

    async def fetch_oversize(self, n: int, uidl: str, size: int) -> None:
        headers = await self.client.top(n, 0)
        message = await account_outbox_row(
            self.spec,
            uidl,
            size,
            headers,
            oversize=True,
            now=self.clock(),
            session=self.report.session,
        )
        self.add(message, len(headers))
        self.report.oversize += 1

    async def fetch_run(self, run: list[tuple[int, str]], run_bytes: int = 0) -> None:
        """RETR `run` (pipelined) within one size-aware deadline: the read timeout is per
        read, so a server trickling a line at a time would otherwise hold the poll for ever.
        Time spent building rows between reads does not count against it. Rows parsed now
        (big messages, attachment links: `outbox.parsed_at_fetch`) are started as tasks and
        awaited after the reads, so the parse workers get them in batches, not one round trip
        per message."""
        uidl_of = dict(run)
        key = self.spec.canary_key
        loop = asyncio.get_running_loop()
        allowed = retr_deadline(self.spec.read_timeout, run_bytes)
        fetch = self.spec.fetch
        # `size >= parsed`: `parsed_at_fetch(size, ...)` for this account's settings.
        parsed = parsed_from(
            attachment_inline_limit=fetch.attachment_inline_limit,
            links=fetch.links is not None,
            defer_any_size=fetch.reshaped,
        )
        rows: list[tuple[NewMessage | asyncio.Future[NewMessage], int]] = []
        deferred = self.deferred_rows()
        report = self.report
        parsing = 0  # rows being parsed (tasks) among `rows`
        credit = 0.0  # row-building time not yet given back to the deadline
        try:
            async with asyncio.timeout_at(loop.time() + allowed) as deadline:
                async for got in self.client.retrieve_batches([rn for rn, _ in run]):
                    building = loop.time()
                    for rn, raw in got:
                        size = len(raw)
                        report.bytes_fetched += size
                        if key is not None and (found := find_canary(raw, self.spec.name, key)):
                            report.canaries.append((found, self.clock()))
                            report.canary_numbers.append(rn)
                            continue
                        if size >= parsed:
                            row = account_outbox_row(
                                self.spec,
                                uidl_of[rn],
                                size,
                                raw,
                                oversize=False,
                                now=self.clock(),
                                defer=True,
                                session=report.session,
                            )
                            rows.append((asyncio.ensure_future(row), size))
                            parsing += 1
                            continue
                        rows.append((deferred(uidl_of[rn], raw, size), size))
                    credit += loop.time() - building
                    if credit >= DEADLINE_CREDIT and (when := deadline.when()) is not None:
                        deadline.reschedule(when + credit)
                        credit = 0.0
            if not parsing:  # every row is built (most runs): into the batch in one go
                self.batch.extend(cast("list[NewMessage]", [row for row, _ in rows]))
                self.batch_bytes += sum([size for _, size in rows])
                return
            # The parse workers answer within their own allowance; the session's deadline
            # makes room for it while they work, and keeps only the time they took.
            pool = current_pool()
            room = pool.allowance(parsing) if pool is not None else 0.0
            if self.extend is not None and room:
                self.extend(room)
            waited = loop.time()
            for row_or_task, size in rows:
                message = row_or_task if isinstance(row_or_task, NewMessage) else await row_or_task
                self.add(message, size)
            if self.extend is not None and room:
                self.extend(loop.time() - waited - room)
        except TimeoutError:
            self.client.abort()  # nothing is committed: the mailbox stays as it was
            raise ReadTimeout(
                f"RETR of {len(run)} message(s), {run_bytes} octets announced, took over "
                f"{allowed:.0f}s (read_timeout plus {MIN_TRANSFER_RATE // 1024} KiB/s); the "
                "server is too slow or stalling, the session was dropped"
            ) from None
        finally:
            for row_or_task, _ in rows if parsing else ():
                if isinstance(row_or_task, asyncio.Future) and not row_or_task.done():
                    row_or_task.cancel()

    def deferred_rows(self) -> DeferredRows:
        """This session's `deferred_account_rows`, made on first use."""
        if self.builder is None:
            self.builder = deferred_account_rows(self.spec, self.report.session)
        return self.builder

    def add(self, message: NewMessage, fetched: int) -> None:
        self.batch.append(message)
        self.batch_bytes += fetched

    async def flush(self, *, last: bool = False) -> None:
        """Start recording what was fetched, as one group, once the previous group is
        committed; while that one is still being committed, keep gathering (up to
        `GROUP_MESSAGES` / `GROUP_BYTES`, or unless this is the `last` flush)."""
        if not self.batch:
            return
        if (
            not last
            and self.writing is not None
            and not self.writing.done()
            and len(self.batch) < GROUP_MESSAGES
            and self.batch_bytes < GROUP_BYTES
        ):
            return
        await self.settle()
        taken, self.batch, self.batch_bytes = self.batch, [], 0
        self.writing = asyncio.create_task(self.commit(taken))

    async def settle(self) -> None:
        if self.writing is not None:
            task, self.writing = self.writing, None
            await task

    async def commit(self, taken: list[NewMessage]) -> None:
        await self.store.record(taken, self.clock())
        self.recorded.extend(m.uidl for m in taken)
        self.report.recorded += len(taken)
        if self.notify is not None:
            self.notify()

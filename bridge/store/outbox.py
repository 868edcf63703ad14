"""The outbox in SQL (`OutboxStore`): rows and bodies, claims, retries, dead letters, deletion.

Rules kept here once for every backend:
* `record` is idempotent per (account, UIDL): a seen UIDL inserts nothing, and the first copy
  of a body wins.
* A claim is a `claim_until` stamp, not a held lock, so the claiming transaction commits at
  once and a worker that dies gives its rows back when the stamp passes. On PostgreSQL the
  rows are picked `FOR UPDATE SKIP LOCKED`: concurrent claimers pass over each other's rows
  instead of waiting for them, and under READ COMMITTED a row claimed by a transaction that
  committed after our snapshot is re-checked and dropped rather than claimed twice. SQLite has
  one writer at a time (BEGIN IMMEDIATE), which gives the same guarantee.
* `mark_retry` and `mark_dead` change only a still-pending row, so a late worker whose claim
  expired cannot undo a delivery; `mark_delivered_many` never counts a delivery twice.
* `renew_claims` extends only claims the holder still holds (unexpired, row still pending): a
  claim that lapsed may have been taken by another claimer, so it is never revived.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from bridge.store.base import (
    DEFERRED,
    TEMPLATE,
    AccountStats,
    Attempt,
    CustodyEvent,
    DeadLetter,
    NewMessage,
    OutboxItem,
    OutboxStore,
)
from bridge.store.custody import attempt_event, custody_rows, fetched_rows
from bridge.store.links import insert_links
from bridge.store.sql import Execute, Fetch, SQLPart, Tx, atomic, bounded, read, write

__all__ = ["OutboxSQL"]

_ITEM_COLS = (
    "o.id, o.msg_id, o.account, o.uidl, o.webhook, b.payload, o.attempts, o.created_at, "
    "o.next_attempt_at, o.last_error, o.size, "
    # The raw message goes out with a claim only when the body is to be built from it.
    "CASE WHEN substr(b.payload, 1, 1) = ? THEN b.raw END, "
    # A templated body is rendered with the expiry its links were minted with.
    "CASE WHEN substr(b.payload, 1, 1) = ? THEN "
    "(SELECT max(l.expires_at) FROM links l WHERE l.msg_id = o.msg_id) END"
)
_DEAD_COLS = (
    "id, msg_id, account, uidl, webhook, attempts, created_at, finished_at, last_error, last_status"
)
_RELEASE = "claimed_by = NULL, claim_until = NULL"


class OutboxSQL(SQLPart, OutboxStore):
    @bounded
    def record(
        self, messages: Sequence[NewMessage], now: float, *, replay: bool = False
    ) -> Tx[None]:
        unique: dict[tuple[str, str], NewMessage] = {}
        for m in messages:
            unique.setdefault((m.account, m.uidl), m)  # a duplicate in one batch: first wins
        if not unique:
            return
        d = self.dialect
        flags = d.flags
        if not replay:
            # One index probe per message (a batch of several accounts must not probe every
            # account with every UIDL).
            table, args = d.pairs_table(list(unique))
            rows = yield Fetch(
                f"SELECT s.account, s.uidl FROM {table} "
                "JOIN seen s ON s.account = t.a AND s.uidl = t.u",
                args,
            )
            for r in rows:
                unique.pop((r[0], r[1]), None)
        fresh = list(unique.values())
        if not fresh:
            return
        # ON CONFLICT DO NOTHING throughout: a concurrent recorder of the same message (a
        # replica that lost its lease mid-poll) leaves the first copy, never an error.
        yield d.insert_many(
            "seen",
            (("account", "text"), ("uidl", "text"), ("fingerprint", "text"), ("seen_at", "real")),
            [(m.account, m.uidl, m.fingerprint, now) for m in fresh],
            "ON CONFLICT (account, uidl) DO NOTHING",
        )
        inserted = yield d.insert_ids(
            "outbox",
            (
                ("msg_id", "text"),
                ("account", "text"),
                ("uidl", "text"),
                ("webhook", "text"),
                ("size", "bigint"),
                ("state", "text"),
                ("created_at", "real"),
                ("next_attempt_at", "real"),
                ("delete_requested", "bool"),
            ),
            [
                (
                    m.msg_id,
                    m.account,
                    m.uidl,
                    m.webhook,
                    m.size,
                    "pending",
                    now,
                    now,
                    flags[m.delete_after_delivery],
                )
                for m in fresh
            ],
            "ON CONFLICT (msg_id) DO NOTHING",
        )
        # A body for each row inserted now, under the row's id (an existing row keeps its own).
        by_msg_id = {m.msg_id: m for m in fresh}
        yield from d.insert_bodies(sorted((int(r[0]), by_msg_id[r[1]]) for r in inserted))
        for m in fresh:
            if m.links:
                yield from insert_links(m, now)
        yield fetched_rows(d, fresh, now)

    @write
    def claim_due(
        self, now: float, limit: int, holder: str, claim_seconds: float
    ) -> Tx[list[OutboxItem]]:
        if limit <= 0:
            return []
        d = self.dialect
        claimed = yield Fetch(
            "WITH due AS MATERIALIZED (SELECT id FROM outbox WHERE state = 'pending' "
            "AND next_attempt_at <= ? AND (claim_until IS NULL OR claim_until <= ?) "
            f"ORDER BY next_attempt_at, id LIMIT ?{d.skip_locked}) "
            "UPDATE outbox SET claimed_by = ?, claim_until = ? "
            "WHERE id IN (SELECT id FROM due) RETURNING id",
            (now, now, limit, holder, now + claim_seconds),
        )
        if not claimed:
            return []
        # The claim is committed on its own; the rows read now are ours until `claim_until`.
        rows = yield Fetch(
            f"SELECT {_ITEM_COLS} FROM outbox o JOIN bodies b ON b.id = o.id "
            f"WHERE {d.in_list('o.id', 'bigint')} ORDER BY o.next_attempt_at, o.id",
            (DEFERRED, TEMPLATE, d.array([r[0] for r in claimed])),
        )
        return [OutboxItem(*r) for r in rows]

    @write
    def renew_claims(
        self, ids: Collection[int], holder: str, now: float, claim_seconds: float
    ) -> Tx[set[int]]:
        if not ids:
            return set()
        d = self.dialect
        # One statement: the row lock (PostgreSQL) or the one writer (SQLite) orders it with a
        # concurrent claim, so a row is either still ours and renewed, or someone else's.
        rows = yield Fetch(
            "UPDATE outbox SET claim_until = ? "
            f"WHERE {d.in_list('id', 'bigint')} AND claimed_by = ? AND state = 'pending' "
            "AND claim_until > ? RETURNING id",
            (now + claim_seconds, d.array(list(ids)), holder, now),
        )
        return {int(r[0]) for r in rows}

    @atomic
    def mark_delivered_many(
        self, marks: Sequence[tuple[int, int]], now: float, attempts: Sequence[Attempt] = ()
    ) -> Tx[None]:
        if not marks:
            return
        d = self.dialect
        by_status: dict[int, list[int]] = {}
        for item_id, status in marks:
            by_status.setdefault(status, []).append(item_id)
        # One statement per status (a group is nearly always all 200 or all 204), not one per
        # row: a row-by-row UPDATE was most of the store's work per delivered message.
        for status, ids in by_status.items():
            yield Execute(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, "
                f"last_status = ?, finished_at = ?, {_RELEASE} "
                f"WHERE {d.in_list('id', 'bigint')} AND state <> 'delivered'",
                (status, now, d.array(ids)),
            )
        if attempts:
            yield custody_rows(self.dialect, [attempt_event(a, "delivered") for a in attempts])

    @atomic
    def mark_retry(
        self,
        item_id: int,
        next_attempt_at: float,
        error: str,
        status: int | None,
        now: float,
        attempt: Attempt | None = None,
    ) -> Tx[None]:
        yield from self._attempt_failed(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, "
            f"last_status = ?, {_RELEASE} WHERE id = ? AND state = 'pending'",
            (next_attempt_at, error, status, item_id),
            attempt,
            "retry",
        )

    @atomic
    def mark_dead(
        self,
        item_id: int,
        error: str,
        status: int | None,
        now: float,
        attempt: Attempt | None = None,
    ) -> Tx[None]:
        yield from self._attempt_failed(
            "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?, "
            f"last_status = ?, finished_at = ?, {_RELEASE} WHERE id = ? AND state = 'pending'",
            (error, status, now, item_id),
            attempt,
            "dead",
        )

    def _attempt_failed(
        self, sql: str, args: tuple[Any, ...], attempt: Attempt | None, event: str
    ) -> Tx[None]:
        """Count a failed attempt (`sql` changes only a still-pending row) and, when it did
        change the row, the attempt's custody event."""
        changed = yield Execute(sql, args)
        if attempt is not None and changed:
            yield custody_rows(self.dialect, [attempt_event(attempt, event)])

    @read
    def dead_letters(self, limit: int = 100) -> Tx[list[DeadLetter]]:
        rows = yield Fetch(
            f"SELECT {_DEAD_COLS} FROM outbox WHERE state = 'dead' "
            "ORDER BY finished_at, id LIMIT ?",
            (limit,),
        )
        return [DeadLetter(*r) for r in rows]

    @atomic
    def replay(
        self, ids: Sequence[int] | None, now: float, *, links_expire: float | None = None
    ) -> Tx[int]:
        d = self.dialect
        which = "" if ids is None else f" AND {d.in_list('id', 'bigint')}"
        args: tuple[object, ...] = () if ids is None else (d.array(ids),)
        if links_expire is not None:
            # Fresh links: the expiry the body is rendered with moves (never back).
            yield Execute(
                "UPDATE links SET expires_at = CASE WHEN expires_at < ? THEN ? "
                "ELSE expires_at END WHERE purged_at IS NULL AND msg_id IN "
                f"(SELECT msg_id FROM outbox WHERE state = 'dead'{which})",
                (links_expire, links_expire, *args),
            )
        rows = yield Fetch(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, "
            f"finished_at = NULL, {_RELEASE} WHERE state = 'dead'{which} "
            "RETURNING msg_id, account, uidl",
            (now, *args),
        )
        if rows:
            yield custody_rows(d, [CustodyEvent(r[0], r[1], r[2], now, "replayed") for r in rows])
        return len(rows)

    @read
    def pending_count(self, account: str | None = None) -> Tx[int]:
        if account is None:
            rows = yield Fetch("SELECT count(*) FROM outbox WHERE state = 'pending'")
        else:
            rows = yield Fetch(
                "SELECT count(*) FROM outbox WHERE state = 'pending' AND account = ?", (account,)
            )
        return int(rows[0][0])

    @read
    def next_due_at(self) -> Tx[float | None]:
        rows = yield Fetch("SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending'")
        return None if rows[0][0] is None else float(rows[0][0])

    @read
    def raw_message(self, msg_id: str) -> Tx[bytes | None]:
        rows = yield Fetch(
            "SELECT b.raw FROM outbox o JOIN bodies b ON b.id = o.id WHERE o.msg_id = ?",
            (msg_id,),
        )
        return None if not rows or rows[0][0] is None else bytes(rows[0][0])

    # -- deletion after delivery ------------------------------------------------------------
    @read
    def deletable_uidls(self, account: str) -> Tx[list[str]]:
        rows = yield Fetch(
            "SELECT uidl FROM outbox WHERE account = ? AND state = 'delivered' "
            "AND delete_requested AND deleted_at IS NULL "
            "AND last_status BETWEEN 200 AND 299 ORDER BY id",
            (account,),
        )
        return [r[0] for r in rows]

    @atomic
    def mark_deleted(
        self,
        account: str,
        uidls: Collection[str],
        now: float,
        session: str | None = None,
        *,
        vanished: bool = False,
    ) -> Tx[None]:
        if not uidls:
            return
        d = self.dialect
        rows = yield Fetch(
            "UPDATE outbox SET deleted_at = ? WHERE account = ? "
            f"AND {d.in_list('uidl', 'text')} AND deleted_at IS NULL RETURNING msg_id, uidl",
            (now, account, d.array(set(uidls))),
        )
        # Nothing can ask for the raw message of a delivered, deleted message any more unless
        # a link to it was minted (the link sweep drops it with the link content).
        yield Execute(
            "UPDATE bodies SET raw = NULL WHERE raw IS NOT NULL AND id IN "
            "(SELECT id FROM outbox o WHERE account = ? AND state = 'delivered' "
            f"AND {d.in_list('uidl', 'text')} "
            "AND NOT EXISTS (SELECT 1 FROM links l WHERE l.msg_id = o.msg_id))",
            (account, d.array(set(uidls))),
        )
        event = "vanished" if vanished else "deleted"
        if rows:
            yield custody_rows(
                d, [CustodyEvent(r[0], account, r[1], now, event, session=session) for r in rows]
            )

    # -- status -----------------------------------------------------------------------------
    @read
    def account_stats(self, now: float) -> Tx[list[AccountStats]]:
        rows = yield Fetch(
            "SELECT account, count(*) FILTER (WHERE state = 'pending'), "
            "count(*) FILTER (WHERE state = 'dead'), "
            "min(created_at) FILTER (WHERE state = 'pending') "
            "FROM outbox WHERE state IN ('pending', 'dead') GROUP BY account ORDER BY account"
        )
        return [
            AccountStats(r[0], int(r[1]), int(r[2]), None if r[3] is None else float(r[3]))
            for r in rows
        ]

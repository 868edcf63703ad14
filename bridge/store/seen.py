"""The seen set in SQL (`SeenStore`): one row per (account, UIDL) the bridge has or skipped."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from bridge.store.base import SeenState, SeenStore
from bridge.store.sql import Execute, Fetch, Many, SQLPart, Tx, atomic, read, write

__all__ = ["SeenSQL"]

# A seen UIDL must be kept while its message is unfinished: its row still pending or dead, or
# its requested deletion not yet confirmed by the server.
UNFINISHED = "(state IN ('pending', 'dead') OR (delete_requested AND deleted_at IS NULL))"


def _mark_seen(account: str, items: Sequence[tuple[str, str]], now: float) -> Tx[None]:
    dedup = dict(items)  # one row per uidl: DO UPDATE may not touch a row twice
    if dedup:
        yield Many(
            "INSERT INTO seen (account, uidl, fingerprint, seen_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (account, uidl) DO UPDATE SET fingerprint = excluded.fingerprint",
            [(account, uidl, fp, now) for uidl, fp in dedup.items()],
        )


class SeenSQL(SQLPart, SeenStore):
    @read
    def seen_uidls(self, account: str) -> Tx[set[str]]:
        rows = yield Fetch("SELECT uidl FROM seen WHERE account = ?", (account,))
        return {r[0] for r in rows}

    @read
    def seen_state(self, account: str) -> Tx[SeenState]:
        # One round trip for both: this read is half the store cost of an idle poll.
        rows = yield Fetch(
            "SELECT uidl FROM seen WHERE account = ? "
            "UNION ALL SELECT NULL FROM polled WHERE account = ?",
            (account, account),
        )
        uidls = {r[0] for r in rows}
        polled = None in uidls
        uidls.discard(None)
        return SeenState(uidls, polled)

    @write
    def mark_seen(self, account: str, items: Sequence[tuple[str, str]], now: float) -> Tx[None]:
        yield from _mark_seen(account, items, now)

    @atomic
    def mark_polled(self, account: str, items: Sequence[tuple[str, str]], now: float) -> Tx[None]:
        yield from _mark_seen(account, items, now)
        yield Execute(
            "INSERT INTO polled (account, first_polled_at) VALUES (?, ?) "
            "ON CONFLICT (account) DO NOTHING",
            (account, now),
        )

    @read
    def known_fingerprints(self, account: str, fingerprints: Collection[str]) -> Tx[set[str]]:
        # The account's rows by the primary key; no index by fingerprint (schema version 5).
        wanted = set(fingerprints)
        if not wanted:
            return set()
        d = self.dialect
        rows = yield Fetch(
            "SELECT DISTINCT fingerprint FROM seen "
            f"WHERE account = ? AND {d.in_list('fingerprint', 'text')}",
            (account, d.array(wanted)),
        )
        return {r[0] for r in rows}

    @read
    def fingerprints_of(self, account: str, uidls: Collection[str]) -> Tx[dict[str, str]]:
        wanted = set(uidls)
        if not wanted:
            return {}
        d = self.dialect
        rows = yield Fetch(
            f"SELECT uidl, fingerprint FROM seen WHERE account = ? AND {d.in_list('uidl', 'text')}",
            (account, d.array(wanted)),
        )
        return {r[0]: r[1] for r in rows}

    @atomic
    def forget_missing(self, account: str, present: Collection[str]) -> Tx[int]:
        d = self.dialect
        keep = set(present)
        seen = yield Fetch("SELECT uidl FROM seen WHERE account = ?", (account,))
        gone = [r[0] for r in seen if r[0] not in keep]
        if not gone:
            return 0
        # One statement decides and deletes, so no row lock is needed: nothing can make a
        # finished message unfinished again (a seen UIDL is never recorded twice).
        dropped = yield Fetch(
            f"DELETE FROM seen WHERE account = ? AND {d.in_list('uidl', 'text')} "
            "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.account = seen.account "
            f"AND o.uidl = seen.uidl AND {UNFINISHED}) RETURNING uidl",
            (account, d.array(gone)),
        )
        if dropped:
            # Finished outbox rows of vanished messages go too (bodies cascade), so a mailbox
            # that keeps its mail on the server bounds the store by the mailbox size.
            yield Execute(
                "DELETE FROM outbox WHERE account = ? "
                f"AND {d.in_list('uidl', 'text')} AND state = 'delivered'",
                (account, d.array([r[0] for r in dropped])),
            )
        return len(dropped)

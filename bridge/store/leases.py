"""Account leases and replica heartbeats in SQL (`LeaseStore`).

Leases are rows with an expiry, not advisory locks
--------------------------------------------------
Each account lease is a row (account, holder, expires_at), renewed by heartbeat. We chose this
over PostgreSQL's session-scoped advisory locks because:
* a session lock lives as long as the TCP session; a replica that hangs, or a network partition,
  keeps the lock until TCP keepalive gives up (often hours with default kernel settings), while a
  row expires after its TTL (default 30 s) whatever happens to the connection;
* session locks need one pinned connection per replica and break behind pgbouncer in transaction
  mode; rows work through any pooler;
* rows are visible (`lease_holders`, `SELECT * FROM leases`) for status pages and checks.
The price is that replicas' clocks must agree to well within the TTL (run NTP), because expiry
is compared with the caller's `now`. Taking over is one conditional upsert
(`... ON CONFLICT DO UPDATE ... WHERE leases.expires_at <= now`), which the database evaluates on
the locked, newest row, so two replicas can never both win the same expired lease.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from bridge.store.base import LeaseStore
from bridge.store.sql import Execute, Fetch, SQLPart, Tx, atomic, read, write

__all__ = ["LeaseSQL"]


class LeaseSQL(SQLPart, LeaseStore):
    @write
    def acquire_leases(
        self,
        holder: str,
        accounts: Sequence[str],
        ttl: float,
        now: float,
        max_count: int | None,
    ) -> Tx[set[str]]:
        d = self.dialect
        wanted = list(dict.fromkeys(accounts))
        held = yield Fetch(
            "UPDATE leases SET expires_at = ? WHERE holder = ? AND expires_at > ? "
            f"AND {d.in_list('account', 'text')} RETURNING account",
            (now + ttl, holder, now, d.array(wanted)),
        )
        result = {r[0] for r in held}
        rows = yield Fetch(
            "SELECT count(*) FROM leases WHERE holder = ? AND expires_at > ?", (holder, now)
        )
        need = None if max_count is None else max_count - int(rows[0][0])
        if need is not None and need <= 0:
            return result
        free = yield Fetch(
            f"SELECT t.v FROM {d.array_table('text')} LEFT JOIN leases l ON l.account = t.v "
            "WHERE l.account IS NULL OR l.expires_at <= ? ORDER BY t.n",
            (d.array(wanted), now),
        )
        candidates = [r[0] for r in free]
        while candidates and (need is None or need > 0):
            take = candidates if need is None else candidates[:need]
            candidates = [] if need is None else candidates[need:]
            # Sorted, so concurrent acquirers lock rows in one order and cannot deadlock.
            got = yield Fetch(
                "INSERT INTO leases (account, holder, expires_at) "
                f"SELECT t.v, ?, ? FROM {d.array_table('text')} WHERE true ORDER BY t.v "
                "ON CONFLICT (account) DO UPDATE SET holder = excluded.holder, "
                "expires_at = excluded.expires_at WHERE leases.expires_at <= ? "
                "RETURNING account",
                (holder, now + ttl, d.array(sorted(take)), now),
            )
            result.update(r[0] for r in got)
            if need is not None:
                need -= len(got)
        return result

    @write
    def renew_leases(self, holder: str, ttl: float, now: float) -> Tx[set[str]]:
        rows = yield Fetch(
            "UPDATE leases SET expires_at = ? WHERE holder = ? AND expires_at > ? "
            "RETURNING account",
            (now + ttl, holder, now),
        )
        return {r[0] for r in rows}

    @write
    def release_leases(self, holder: str, accounts: Collection[str] | None = None) -> Tx[None]:
        if accounts is None:
            yield Execute("DELETE FROM leases WHERE holder = ?", (holder,))
            return
        d = self.dialect
        yield Execute(
            f"DELETE FROM leases WHERE holder = ? AND {d.in_list('account', 'text')}",
            (holder, d.array(set(accounts))),
        )

    @read
    def lease_holders(self, now: float) -> Tx[dict[str, str]]:
        rows = yield Fetch("SELECT account, holder FROM leases WHERE expires_at > ?", (now,))
        return {r[0]: r[1] for r in rows}

    @atomic
    def heartbeat(self, holder: str, now: float, ttl: float) -> Tx[int]:
        yield Execute("DELETE FROM replicas WHERE expires_at <= ?", (now,))
        yield Execute(
            "INSERT INTO replicas (holder, expires_at) VALUES (?, ?) "
            "ON CONFLICT (holder) DO UPDATE SET expires_at = excluded.expires_at",
            (holder, now + ttl),
        )
        rows = yield Fetch("SELECT count(*) FROM replicas WHERE expires_at > ?", (now,))
        return int(rows[0][0])

    @read
    def live_replicas(self, now: float) -> Tx[list[str]]:
        rows = yield Fetch(
            "SELECT holder FROM replicas WHERE expires_at > ? ORDER BY holder", (now,)
        )
        return [r[0] for r in rows]

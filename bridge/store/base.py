"""The store contract: records and the abstract `Store` both backends implement.

Times are unix seconds handed in by the caller (`now`), never read from the clock here, so tests
and the poller control time and two backends cannot disagree about it.

Life of a message
-----------------
1. The poller fetches a message whose UIDL is not in `seen_uidls` and calls `record`: in ONE
   transaction the outbox row (pending, due `now`), the raw bytes and the seen UIDL with its
   fingerprint are written. A crash before commit leaves nothing, so the message is fetched
   again; a crash after commit leaves it seen and pending, so it is delivered exactly once from
   the outbox. Recording an already-seen (account, uidl) is a no-op for that message.
2. Delivery workers `claim_due` a batch. A claim hides the row from other claimers until it is
   marked or `claim_seconds` pass (so a worker or replica that dies gives its claims back).
3. The worker ends the claim with `mark_delivered` (2xx), `mark_retry` (the retry schedule is the
   row's `next_attempt_at`, so a restart resumes it) or `mark_dead` (dead-letter list;
   `replay` puts it back to pending with attempts reset).
4. `on_delivered: delete`: `deletable_uidls` lists delivered UIDLs whose deletion was requested
   and not yet confirmed; after DELE+QUIT succeeded the poller calls `mark_deleted`.
5. `forget_missing` prunes seen UIDLs that left the server, but keeps any whose outbox row is
   still pending/dead or whose deletion is unconfirmed, so the store stays bounded without ever
   forgetting unfinished work.

Leases and fair share
---------------------
Every replica calls `heartbeat` (returns N, the live replicas), reads `live_replicas` and
`lease_holders`, lets `bridge.poller.sharing.plan` decide, `release_leases` what it hands back
and `acquire_leases(holder, accounts, ttl, now, max_count=capacity)`. A lease is exclusive until
its expiry; `renew_leases` extends the ones still held. See `postgres.py` for why leases are
rows with an expiry rather than advisory locks.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from bridge.records import record

__all__ = [
    "DEFERRED",
    "LINK_CHUNK",
    "LINK_TOMBSTONE_SECONDS",
    "TEMPLATE",
    "AccountStats",
    "AccountStore",
    "Attempt",
    "CustodyEvent",
    "CustodyStore",
    "DeadLetter",
    "LeaseStore",
    "LedgerEntry",
    "LinkContent",
    "LinkStore",
    "NewMessage",
    "OutboxItem",
    "OutboxStore",
    "SeenState",
    "SeenStore",
    "Store",
    "StoredLink",
    "deferred_payload",
    "deferred_source",
    "needs_prepare",
]

# A payload that starts with this byte is not a webhook body yet but a note to build one from
# the row's raw message at delivery (`bridge.outbox.outbox_row(defer=True)`, built back by
# `bridge.outbox.DeferredPayload`); the rest names the source.
# A JSON body never starts with NUL. The stores return `raw` with a claimed item only then.
DEFERRED = b"\x00"


# A payload that starts with this byte is a webhook body with placeholders for its attachment
# links, rendered at every delivery with the row's `links_expire` (`bridge.attachments.templates`):
# a replay then mints fresh links while retries keep signing the same bytes.
# The stores never return `raw` for it: the links are all it needs.
TEMPLATE = b"\x01"

# Link content is stored in pieces of this many bytes, so a download, a Range request or a
# purge touches one piece at a time whatever the attachment's size.
LINK_CHUNK = 256 * 1024
# Link records of purged content are kept this long, so a request answers 410 (gone), not 404.
LINK_TOMBSTONE_SECONDS = 30 * 86400


def needs_prepare(payload: bytes) -> bool:
    """True when the stored payload is not the finished body (deferred or templated)."""
    return payload[:1] in (DEFERRED, TEMPLATE)


def deferred_payload(source: str) -> bytes:
    return DEFERRED + source.encode("ascii")


def deferred_source(payload: bytes) -> str | None:
    """The source named by a deferred payload, or None for a finished webhook body."""
    if payload[:1] != DEFERRED:
        return None
    return payload[1:].decode("ascii", "replace")


@record
class LinkContent:
    """Content served by link: one attachment (`part` = its index) or the raw message (-1).

    `chunks(n)` yields the decoded bytes in pieces of at most `n` (the store writes them away
    one by one), so recording a 50 MB attachment never holds a second copy of it.
    """

    part: int
    size: int
    sha256: str
    content_type: str
    filename: str | None
    chunks: Callable[[int], Iterable[bytes]]


@record
class StoredLink:
    """What the link listener needs to answer for one part; `purged`: content gone (410)."""

    msg_id: str
    part: int
    size: int
    sha256: str
    content_type: str
    filename: str | None
    expires_at: float
    purged: bool

    @classmethod
    def from_row(cls, row: Any) -> StoredLink:
        """From (msg_id, part, size, sha256, content_type, filename, expires_at, purged)."""
        msg_id, part, size, sha256, ctype, filename, expires_at, purged = tuple(row)
        return cls(
            msg_id, int(part), int(size), sha256, ctype, filename, float(expires_at), bool(purged)
        )


@record
class NewMessage:
    """One fetched message, ready to be made durable by `Store.record`."""

    account: str
    uidl: str
    msg_id: str  # webhook-id, stable per account+uidl
    webhook: str  # delivery target name (or URL) the worker resolves
    size: int
    fingerprint: str
    payload: bytes  # encoded JSON webhook body, signed byte-for-byte; or `deferred_payload`
    raw: bytes | None  # raw message for replay; None when over max_message_size
    delete_after_delivery: bool
    links: tuple[LinkContent, ...] = ()  # content served by signed link (`payload` templated)
    links_expire: float | None = None  # when the links minted for this message expire
    # For the custody trail: the poll session that fetched it and its Message-ID header.
    session: str | None = None
    message_id: str | None = None


@record
class OutboxItem:
    id: int
    msg_id: str
    account: str
    uidl: str
    webhook: str
    payload: bytes
    attempts: int  # attempts made BEFORE this claim
    created_at: float
    next_attempt_at: float
    last_error: str | None
    size: int = 0
    raw: bytes | None = None  # only for a deferred payload: what its body is built from
    links_expire: float | None = None  # expiry of the links a templated payload carries


@record
class DeadLetter:
    id: int  # same id as the outbox row; `replay(ids)` takes it
    msg_id: str
    account: str
    uidl: str
    webhook: str
    attempts: int
    created_at: float
    failed_at: float
    last_error: str | None
    last_status: int | None


@record
class AccountStats:
    account: str
    pending: int
    dead: int
    oldest_pending_at: float | None


@record
class SeenState:
    """What a poll needs to know before it fetches: the seen UIDLs and whether the account was
    polled before (an empty seen set alone cannot tell a new account from an emptied one)."""

    uidls: set[str]
    polled: bool


@record
class Attempt:
    """One delivery attempt as the custody trail keeps it: never a body, never a secret."""

    msg_id: str
    account: str
    uidl: str
    at: float
    status: int | None
    error: str | None
    duration: float | None
    response_head: str | None


@record
class CustodyEvent:
    """One step in a message's custody trail.

    `event` is one of: `fetched` (recorded from the mailbox by poll `session`; `detail` has
    size and fingerprint), `delivered` / `retry` / `dead` (one delivery attempt each: HTTP
    `status`, `detail` with error, duration and the first bytes of the answer), `replayed`,
    `dele_sent` (session `session` sent DELE), `deleted` (that session's QUIT got +OK),
    `vanished` (gone from the server without our DELE, after delivery).
    """

    msg_id: str
    account: str
    uidl: str
    at: float
    event: str
    session: str | None = None
    status: int | None = None
    message_id: str | None = None
    detail: dict[str, Any] | None = None


@record
class LedgerEntry:
    """What the store knows of one UIDL of an account (for `pop3bridge reconcile`)."""

    uidl: str
    seen: bool  # in the seen set (recorded or deliberately skipped)
    state: str | None  # outbox row: pending | delivered | dead; None without a row
    delivered_at: float | None  # from the custody trail, also after the row was pruned
    msg_id: str | None


class SeenStore(abc.ABC):
    """The seen set: which UIDLs of each account the bridge already has (or chose to skip)."""

    @abc.abstractmethod
    async def seen_uidls(self, account: str) -> set[str]: ...

    @abc.abstractmethod
    async def seen_state(self, account: str) -> SeenState:
        """The seen UIDLs and the account's polled flag, in one read."""

    @abc.abstractmethod
    async def mark_polled(self, account: str, items: Sequence[tuple[str, str]], now: float) -> None:
        """The account's first poll: flag it as polled and record `items` ((uidl, fingerprint),
        the mailbox's existing mail with `initial: new`) as seen, in one transaction."""

    @abc.abstractmethod
    async def mark_seen(self, account: str, items: Sequence[tuple[str, str]], now: float) -> None:
        """Record (uidl, fingerprint) pairs as seen without delivering them.

        Used for `initial: new` and for re-keying after a mass UIDL change.
        """

    @abc.abstractmethod
    async def known_fingerprints(self, account: str, fingerprints: Collection[str]) -> set[str]:
        """The subset of `fingerprints` already seen for `account`."""

    @abc.abstractmethod
    async def fingerprints_of(self, account: str, uidls: Collection[str]) -> dict[str, str]:
        """uidl -> the fingerprint stored with it, for those of `uidls` seen for `account`."""

    @abc.abstractmethod
    async def forget_missing(self, account: str, present: Collection[str]) -> int:
        """Drop seen UIDLs not in `present`; returns how many were dropped.

        Never drops a UIDL whose outbox row is pending or dead, or whose requested deletion is
        not yet confirmed.
        """


class OutboxStore(abc.ABC):
    """Messages on their way to a webhook: rows, bodies, claims, retries, dead letters, and the
    deletion after delivery that a row's 2xx allows."""

    @abc.abstractmethod
    async def record(
        self, messages: Sequence[NewMessage], now: float, *, replay: bool = False
    ) -> None:
        """Outbox rows (due `now`) + raw bytes + seen UIDLs, in one transaction.

        Idempotent on (account, uidl): a message whose UIDL is already seen inserts nothing.
        With `replay` (`pop3bridge replay` fetched it from the server again because the store
        no longer had its row) a seen UIDL does not stop the row; an existing row still does.
        """

    @abc.abstractmethod
    async def claim_due(
        self, now: float, limit: int, holder: str, claim_seconds: float
    ) -> list[OutboxItem]:
        """Claim up to `limit` pending items due at `now`, oldest due first.

        A claimed item is invisible to other claimers until it is marked or until
        `now + claim_seconds` has passed.
        """

    @abc.abstractmethod
    async def renew_claims(
        self, ids: Collection[int], holder: str, now: float, claim_seconds: float
    ) -> set[int]:
        """Extend `holder`'s claims on `ids` to `now + claim_seconds`; returns the ids renewed.

        Only a row `holder` still holds is renewed: still pending, claimed by `holder`, and its
        claim not yet passed at `now`. Any other row (delivered, dead, released by a retry,
        expired, or claimed by someone else since) is left as it is and missing from the result:
        its claim may belong to another claimer now, so the caller must not send it. The worker
        renews the rows of a claim it made ahead of time as it lets them in to be sent, so that
        a claim still lasts from then as long as one made then would (`claim_seconds`).
        """

    async def mark_delivered(
        self, item_id: int, status: int, now: float, attempt: Attempt | None = None
    ) -> None:
        await self.mark_delivered_many([(item_id, status)], now, [attempt] if attempt else ())

    @abc.abstractmethod
    async def mark_delivered_many(
        self, marks: Sequence[tuple[int, int]], now: float, attempts: Sequence[Attempt] = ()
    ) -> None:
        """Mark each (item_id, status) delivered, in ONE transaction; a no-op when empty.

        The worker commits the deliveries that finish together as a group: one commit per
        message was a fifth of the delivery stage's CPU.
        """

    @abc.abstractmethod
    async def mark_retry(
        self,
        item_id: int,
        next_attempt_at: float,
        error: str,
        status: int | None,
        now: float,
        attempt: Attempt | None = None,
    ) -> None:
        """Count a failed attempt and schedule the next one; releases the claim."""

    @abc.abstractmethod
    async def mark_dead(
        self,
        item_id: int,
        error: str,
        status: int | None,
        now: float,
        attempt: Attempt | None = None,
    ) -> None:
        """Count the final failed attempt and move the item to the dead-letter list."""

    @abc.abstractmethod
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, oldest failure first."""

    @abc.abstractmethod
    async def replay(
        self, ids: Sequence[int] | None, now: float, *, links_expire: float | None = None
    ) -> int:
        """Put dead letters (`None` = all) back to pending, due `now`, attempts reset.

        Returns how many were replayed; ids that are not dead letters are ignored. With
        `links_expire`, the links of the replayed messages are re-minted to expire then
        (their content is kept while a row is dead, so it is still there).
        """

    @abc.abstractmethod
    async def pending_count(self, account: str | None = None) -> int: ...

    @abc.abstractmethod
    async def next_due_at(self) -> float | None:
        """Earliest `next_attempt_at` among pending items (claimed ones included), or None."""

    @abc.abstractmethod
    async def raw_message(self, msg_id: str) -> bytes | None: ...

    # -- deletion after delivery -------------------------------------------------------------
    @abc.abstractmethod
    async def deletable_uidls(self, account: str) -> list[str]:
        """UIDLs delivered with a 2xx whose deletion was requested and not yet confirmed."""

    @abc.abstractmethod
    async def mark_deleted(
        self,
        account: str,
        uidls: Collection[str],
        now: float,
        session: str | None = None,
        *,
        vanished: bool = False,
    ) -> None:
        """The server confirmed (QUIT +OK of poll `session`) the deletion of `uidls`; with
        `vanished`, they left the server without our DELE (the trail says which).

        The stored raw message of each is dropped at once unless a link was minted for it:
        nothing can ask for it any more (a delivered row is never replayed).
        """

    # -- status ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def account_stats(self, now: float) -> list[AccountStats]:
        """One row per account that has outbox rows (pending or dead), sorted by account."""


class CustodyStore(abc.ABC):
    """The custody trail: what happened to each message, kept `retention` after delivery.

    `record`, the `mark_*` methods and `mark_deleted` write their events in their own
    transactions (an event exists exactly when the change it describes was committed);
    `add_custody` is for what happens outside the store (DELE sent in a session).
    """

    @abc.abstractmethod
    async def add_custody(self, events: Sequence[CustodyEvent]) -> None: ...

    @abc.abstractmethod
    async def custody_trail(self, msg_id: str) -> list[CustodyEvent]:
        """Every event of one message, oldest first (empty when unknown or purged)."""

    @abc.abstractmethod
    async def custody_lookup(
        self,
        *,
        account: str | None = None,
        uidl: str | None = None,
        message_id: str | None = None,
        since: float | None = None,
    ) -> list[str]:
        """msg_ids of fetched messages matching every given criterion, oldest first."""

    @abc.abstractmethod
    async def purge_custody(self, delivered_before: float) -> int:
        """Forget the trails of messages whose last event is a delivery (or their deletion
        after one) older than `delivered_before`; returns how many events went."""

    @abc.abstractmethod
    async def ledger(self, account: str) -> dict[str, LedgerEntry]:
        """uidl -> what the store knows: seen set, outbox rows and delivered trails."""

    @abc.abstractmethod
    async def requeue(self, msg_ids: Collection[str], now: float) -> list[str]:
        """Put these messages' rows back to pending, due `now`, whatever their state (a replay
        of delivered mail keeps its webhook-id); returns the msg_ids that had a row whose body
        can still be built (a deleted message's raw copy is not kept)."""


class LeaseStore(abc.ABC):
    """Account leases (which replica polls which account) and the replicas' heartbeats."""

    @abc.abstractmethod
    async def acquire_leases(
        self,
        holder: str,
        accounts: Sequence[str],
        ttl: float,
        now: float,
        max_count: int | None,
    ) -> set[str]:
        """Take free or expired leases on `accounts` (in order) until `holder` holds `max_count`.

        Returns every account of `accounts` the holder holds afterwards (including ones it
        already held, whose expiry is extended). With `max_count` set, a holder never ends up
        with more than `max_count` leases; ones already held count towards it.
        """

    @abc.abstractmethod
    async def renew_leases(self, holder: str, ttl: float, now: float) -> set[str]:
        """Extend the holder's unexpired leases to `now + ttl`; returns the ones still held."""

    @abc.abstractmethod
    async def release_leases(self, holder: str, accounts: Collection[str] | None = None) -> None:
        """Give up leases (`None` = all of the holder's), so others can take them at once."""

    @abc.abstractmethod
    async def lease_holders(self, now: float) -> dict[str, str]:
        """account -> holder, live leases only."""

    @abc.abstractmethod
    async def heartbeat(self, holder: str, now: float, ttl: float) -> int:
        """Register `holder` as alive until `now + ttl`; returns the number of live replicas."""

    @abc.abstractmethod
    async def live_replicas(self, now: float) -> list[str]:
        """Holders whose last `heartbeat` has not expired at `now`, sorted.

        Every replica hashes accounts over this list, so they agree on who should own what.
        """


class AccountStore(abc.ABC):
    """Accounts kept in the database (`pop3bridge accounts add|list|remove`)."""

    @abc.abstractmethod
    async def add_account(self, name: str, config: dict[str, Any], now: float) -> None:
        """Insert or replace an account's JSON config (validated by the caller)."""

    @abc.abstractmethod
    async def list_accounts(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, config) pairs sorted by name."""

    @abc.abstractmethod
    async def remove_account(self, name: str) -> bool:
        """True if the account existed."""


class LinkStore(abc.ABC):
    """Content served by signed link (bridge/attachments): recorded with its message by
    `record`, read piece by piece by the listener, purged after its links expire."""

    @abc.abstractmethod
    async def stored_link(self, msg_id: str, part: int) -> StoredLink | None:
        """The link record of one part; None when no link was ever minted for it."""

    @abc.abstractmethod
    async def link_chunk(self, msg_id: str, part: int, seq: int) -> bytes | None:
        """Piece `seq` (of `LINK_CHUNK` bytes, the last one shorter); None when purged."""

    @abc.abstractmethod
    async def purge_links(self, now: float) -> tuple[int, int]:
        """Drop the content of links expired at `now` whose message is not pending or dead.

        The link records stay (as purged) for `LINK_TOMBSTONE_SECONDS`, so a request answers
        410 rather than 404; the raw message of a row already deleted from the server goes
        too. Returns (parts, bytes).
        """

    @abc.abstractmethod
    async def link_bytes(self) -> int:
        """Bytes of content currently held for links."""


class Store(SeenStore, OutboxStore, CustodyStore, LeaseStore, AccountStore, LinkStore):
    """Durable state of the bridge. Every method is one transaction (or none).

    The four parts are separate so a component can say which state it uses (the delivery
    worker needs only the `OutboxStore`); `bridge.store.sql.SQLStore` implements all of them
    once for every backend.
    """

    @abc.abstractmethod
    async def migrate(self) -> None:
        """Bring the schema to the current version; idempotent and safe to run concurrently."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

"""Who should poll which account: bounded-load rendezvous hashing, as pure functions.

Every replica computes the same assignment from the same inputs (the live replicas and the
account names), without talking to the others; the lease table then makes the decision safe
(whatever this module says, a replica only polls what it holds a lease on).

Rendezvous hashing (highest random weight) ranks the replicas per account by a hash of
(replica, account); the account goes to the best-ranked replica. When a replica joins, only
the accounts it now ranks first for move (about M/(N+1)); when one leaves, only its own
accounts move, spread over the rest. Plain rendezvous is only balanced on average, so a
capacity bounds it: accounts are placed in a fixed order (by their best weight, strongest
claim first) and an account whose first choice is full goes to its next choice. With capacity
`ceil(M/N) + slack` (slack: a tenth of the share, at least 2) no replica ever gets more than
that, and the slack keeps the overflow - hence the extra movement on a membership change -
small (measured: a join moves at most 1.7 x M/(N+1) accounts, 1.2 x on average).

`plan` turns the assignment into one heartbeat's steps for one replica: take the free leases
assigned to it, fill up to its capacity from other free accounts (so a lease nobody claims,
e.g. one whose rightful owner is not there yet, is never left unpolled), and hand back a few
accounts that belong elsewhere per heartbeat, never one that is being polled right now.
Someone else's free account is taken only once it stayed free for a whole heartbeat period.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Iterable, Mapping, Sequence

from bridge.records import record

__all__ = ["LeasePlan", "assign", "capacity", "default_slack", "plan", "ranking", "weight"]


def weight(replica: str, account: str) -> int:
    """A stable 64-bit pseudo-random weight of the pair (same on every replica and run)."""
    digest = hashlib.blake2b(
        f"{replica}\x00{account}".encode(), digest_size=8, person=b"p3b-rdv"
    ).digest()
    return int.from_bytes(digest, "big")


def ranking(account: str, replicas: Iterable[str]) -> list[str]:
    """Replicas from the best to the worst owner of `account` (ties broken by name)."""
    return sorted(replicas, key=lambda r: (-weight(r, account), r))


def default_slack(accounts: int, replicas: int) -> int:
    """A tenth of the fair share, at least two: enough room that a membership change moves
    little more than the accounts that must move, small enough to keep the spread even.

    At least two, not one: with small shares a join lowers the capacity by one for everybody
    (ceil(23/11) + 1 = 4 -> ceil(23/12) + 1 = 3), and with one spare place the overflow then
    cascades through the ranking (hypothesis found 7 moves where ~2 were due); two spare places
    absorb it."""
    return max(2, math.ceil(math.ceil(accounts / max(1, replicas)) / 10))


def capacity(accounts: int, replicas: int, slack: int | None = None) -> int:
    """The most accounts one replica may hold: its fair share plus `slack`."""
    if accounts <= 0:
        return 0
    extra = default_slack(accounts, replicas) if slack is None else max(0, slack)
    return math.ceil(accounts / max(1, replicas)) + extra


def assign(
    accounts: Iterable[str], replicas: Iterable[str], slack: int | None = None
) -> dict[str, str]:
    """account -> replica for every account; nobody gets more than `capacity(...)`.

    Empty when there are no replicas. Deterministic: it depends only on the two sets.
    """
    names = sorted(set(accounts))
    members = sorted(set(replicas))
    if not members:
        return {}
    cap = capacity(len(names), len(members), slack)
    ranked = {a: ranking(a, members) for a in names}
    # Strongest claims first, so the accounts that overflow are the ones with the weakest tie
    # to their first choice; the order depends on the membership only through the weights.
    order = sorted(names, key=lambda a: (-weight(ranked[a][0], a), a))
    load = dict.fromkeys(members, 0)
    owner: dict[str, str] = {}
    for account in order:
        for replica in ranked[account]:
            if load[replica] < cap:
                owner[account] = replica
                load[replica] += 1
                break
    return owner


@record
class LeasePlan:
    """One heartbeat's lease changes for one replica."""

    acquire: list[str]  # in priority order: assigned to us first, then others that are free
    release: list[str]  # held by us, assigned to another live replica
    cap: int  # the most leases to hold after this heartbeat


def plan(
    me: str,
    replicas: Collection[str],
    accounts: Sequence[str],
    holders: Mapping[str, str],
    *,
    busy: Collection[str] = (),
    free_before: Collection[str] | None = None,
    slack: int | None = None,
    release_step: int = 4,
) -> LeasePlan:
    """The lease steps for replica `me` given the live `replicas`, every enabled account and
    the live lease `holders` (account -> replica). `busy` accounts are being polled by us now
    and are not released this time (they go at a later heartbeat, after their poll).
    `free_before` are the accounts we saw free at each of our last two heartbeats: only those
    are taken when assigned to another replica. Between the first of those and now every other
    replica had at least one heartbeat, so the rightful owner had its chance first and a lease
    just handed over is not fought over; None means all free ones.

    At most `release_step` accounts are released per heartbeat, even by a replica over its
    capacity, so a join hands accounts over gradually rather than in one burst of logins.
    """
    members = set(replicas) | {me}
    owner = assign(accounts, members, slack)
    cap = capacity(len(owner), len(members), slack)
    mine = [a for a in accounts if holders.get(a) == me]
    free = [a for a in accounts if a not in holders]
    wanted = [a for a in free if owner.get(a) == me]
    stale = set(free) if free_before is None else set(free_before)
    others = sorted(
        (a for a in free if owner.get(a) != me and a in stale), key=lambda a: (-weight(me, a), a)
    )
    # Hand back what belongs to another replica, worst-placed first, then (over capacity)
    # anything, but never what is being polled right now.
    movable = [a for a in mine if a not in busy]
    elsewhere = [a for a in movable if owner.get(a, me) != me]
    elsewhere.sort(key=lambda a: (weight(me, a), a))
    step = max(release_step, 0)
    surplus = min(max(0, len(mine) - cap), step)
    release = elsewhere[:step]
    if surplus > len(release):
        rest = [a for a in movable if a not in release]
        rest.sort(key=lambda a: (weight(me, a), a))
        release += rest[: surplus - len(release)]
    return LeasePlan(acquire=[*wanted, *others], release=release, cap=cap)

"""Spotting a mailbox whose UIDLs all changed at once (server migration, UIDVALIDITY reset).

RFC 1939 promises UIDLs persist across sessions, but a migrated or rebuilt mailbox hands out new
ones for old mail, and trusting them would re-deliver the whole mailbox to the webhook. The
decision is split in two so it costs nothing in the common case:

1. `suspicious` is pure arithmetic on UIDL sets: most of what we had seen vanished AND most of
   the mailbox looks new. Ordinary new mail leaves the old UIDLs in place (keep mode) or arrives
   into an almost empty mailbox after deletions, so this rarely fires by accident.
2. Only then does the session fetch headers (`TOP n 0`) of the "new" messages and ask the store
   which fingerprints it has already delivered. Matches are re-keyed (recorded as seen under
   their new UIDL, not delivered); the rest are genuinely new mail and are delivered. A false
   alarm therefore costs a few TOP commands, never a lost message.

The same path carries a server without UIDL across the upgrade that gave its header-derived
ids one hash with the fingerprint (`bridge.mail.header_uid`): every old id vanishes at once
and every message looks new, so the check fires and the stored fingerprints re-key the mail
(tests/poller/test_header_ids_upgrade.py). In delete mode, mail delivered before the upgrade
and not yet deleted is also found under its new id (`relisted`) and DELE'd there; it would
otherwise stay on the server for good, its old id recorded as vanished.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from bridge.mail import HEADER_UID_PREFIX

__all__ = ["relisted", "suspicious"]

# Both shares must be reached: of the seen UIDLs that vanished, of the mailbox that looks new.
VANISHED_SHARE = 0.5
NEW_SHARE = 0.5


def suspicious(server_uidls: Sequence[str], seen: Collection[str], new: Collection[str]) -> bool:
    """True when the change between `seen` and the server looks like a mass re-keying.

    `seen` must not contain bookkeeping markers; `new` is the server UIDLs not in `seen`.
    """
    if not seen or not new or not server_uidls:
        return False
    present = set(server_uidls)
    vanished = sum(1 for uidl in seen if uidl not in present)
    return vanished >= VANISHED_SHARE * len(seen) and len(new) >= NEW_SHARE * len(present)


def relisted(
    stored: Mapping[str, str],
    listing: Mapping[str, int],
    known: Collection[str],
    taken: Collection[str] = (),
) -> dict[str, str]:
    """Old id -> the header id the same message is listed under now, for delivered ids an
    earlier release stored (`stored`: old id -> its fingerprint) that the server no longer
    lists.

    Only ids that are not this release's header id of their own fingerprint count: such an
    id cannot move, so when it is gone the message left the server. Each is matched, one for
    one, with a listed header id of the same fingerprint, not in `taken` (DELE'd anyway):
    first those the poll does not know, then those in `known` (the seen set: re-keyed at the
    upgrade while the old row was still pending), in mailbox order. The caller checks that a
    known one has no outbox row of its own.
    """
    candidates: dict[str, list[str]] = {}
    order = sorted(listing, key=lambda uid: (uid in known, listing[uid]))
    for uid in order:
        if uid.startswith(HEADER_UID_PREFIX) and uid not in taken:
            fp = uid[len(HEADER_UID_PREFIX) :].split("#", 1)[0]
            candidates.setdefault(fp, []).append(uid)
    moved: dict[str, str] = {}
    for old, fp in stored.items():
        if old.startswith(HEADER_UID_PREFIX + fp):
            continue
        if candidates.get(fp):
            moved[old] = candidates[fp].pop(0)
    return moved

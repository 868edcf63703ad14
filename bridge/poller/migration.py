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
(tests/poller/test_header_ids_upgrade.py).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

__all__ = ["suspicious"]

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

"""The mailbox listing a poll works from: UIDL entries checked against STAT (issue 19).

A server's UIDL answer is untrusted. Rules, in order:

- Every number must be a message STAT counted (1..count) and appear once. A listing that
  breaks this (say 100,000 ids all for message 1 while STAT says 1) is a `RemoteProtocolError`
  for that mailbox's poll: nothing is recorded or fetched, the session ends without QUIT, and
  the next poll tries again. (The client also caps the answer's size from STAT's count, so it
  cannot fill memory first.)
- RFC 1939 ids are 0x21-0x7E. Longer, spaced or UTF-8 ids are kept as sent, as before, since
  stores already hold them. An id that cannot be stored as text (invalid UTF-8 bytes, control
  characters) is replaced by `x-uidl:` and its percent-encoded bytes, the same every poll,
  with a warning: the mailbox keeps working.
- Duplicate ids for different messages: every message is delivered. The first keeps the id;
  each other one is keyed `id#` plus 16 hex digits of its header fingerprint (from `TOP n 0`,
  so the key survives renumbering), plus `#k` when even the headers are identical. A warning
  says how many. (Before, only the first was delivered and the rest waited for it to go.)
- Those keys depend on which members of the group are on the server: once the first is gone,
  the next one is listed under the bare id (and `#k` ones move down). A poll that DELEs part
  of a group would thus make a member it already recorded look new on the next poll, and it
  would be fetched and delivered again under another webhook-id. That happens for every
  server without UIDL (its ids are header hashes, `bridge.mail.header_uid`, shared by
  messages with the same four headers: an MTA's duplicate copies, or a cron mail without
  Message-ID and Date). `deletable_now` therefore holds back the DELE of a group member while
  a member listed after it is not yet deletable; the group leaves the server in one QUIT.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence

from bridge.pop3.errors import RemoteProtocolError

__all__ = ["Listing", "checked_listing", "deletable_now", "storable_uid"]

log = logging.getLogger(__name__)

# What a store can keep as text and a log line can show: no C0 controls, DEL, surrogates.
_UNSTORABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


def storable_uid(uid: str) -> str:
    """`uid` itself, or a stable `x-uidl:` form for one the store cannot keep as text."""
    if _UNSTORABLE.search(uid) is None:
        return uid
    raw = uid.encode("utf-8", "surrogateescape")
    return "x-uidl:" + urllib.parse.quote(raw, safe="")


class Listing(dict[str, int]):
    """uid -> message number for a poll; `groups` lists the keys of each set of messages
    the server gave one id (the bare id first, then the keyed ones), in mailbox order."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[list[str]] = []


def deletable_now(listing: Mapping[str, int], wanted: Mapping[str, int]) -> dict[str, int]:
    """The part of `wanted` (uid -> number: delivered, due for DELE) that may be DELEd now:
    all of it, but for a member of a shared-id group with a member after it that is not in
    `wanted` (module docstring). What is held back stays due and goes with its group."""
    held: set[str] = set()
    for group in getattr(listing, "groups", ()):
        blocked = False
        for key in reversed(group):
            if key not in wanted:
                blocked = True
            elif blocked:
                held.add(key)
    return {uid: n for uid, n in wanted.items() if uid not in held}


async def checked_listing(
    entries: Sequence[tuple[int, str]],
    count: int,
    account: str,
    fingerprints: Callable[[list[tuple[int, str]]], Awaitable[list[tuple[str, str]]]],
) -> Listing:
    """uid -> message number for a poll, by the rules of the module docstring.

    `fingerprints` maps (number, uid) pairs to (uid, header fingerprint) pairs (the poll's
    pipelined `TOP n 0`); it is only called when the server repeats an id.
    """
    numbers: set[int] = set()
    for n, _ in entries:
        if not 1 <= n <= count:
            raise RemoteProtocolError(
                f"UIDL lists message {n} but STAT counted {count}; the listing cannot be "
                "trusted, so nothing was fetched"
            )
        if n in numbers:
            raise RemoteProtocolError(
                f"UIDL lists message {n} more than once; the listing cannot be trusted, so "
                "nothing was fetched"
            )
        numbers.add(n)
    number_of = Listing()
    repeated: list[tuple[int, str]] = []
    replaced = 0
    for n, uid in entries:
        key = storable_uid(uid)
        replaced += key != uid
        if key in number_of:
            repeated.append((n, key))
        else:
            number_of[key] = n
    if replaced:
        log.warning(
            "the server sent %d UIDL(s) that are not RFC 1939 text (bytes outside 0x21-0x7E "
            "that are not UTF-8, or control characters); they are keyed by their escaped bytes",
            replaced,
            extra={"account": account},
        )
    if repeated:
        log.warning(
            "the server gave %d message(s) a UIDL another message has; each is keyed by its "
            "UIDL and header fingerprint and delivered",
            len(repeated),
            extra={"account": account},
        )
        groups: dict[str, list[str]] = {}
        for (n, _), (uid, fp) in zip(repeated, await fingerprints(repeated), strict=True):
            key = f"{uid}#{fp[:16]}"
            k = 1
            while key in number_of:
                k += 1
                key = f"{uid}#{fp[:16]}#{k}"
            number_of[key] = n
            groups.setdefault(uid, [uid]).append(key)
        number_of.groups = [sorted(keys, key=number_of.__getitem__) for keys in groups.values()]
    return number_of

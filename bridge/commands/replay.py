"""`pop3bridge replay --account A [--since DATE] [--uidl U ...]`: send messages again.

For a receiver that lost data (a restored database, a bug fixed), or to re-run a new receiver
over recent mail. Every message goes out with its ORIGINAL webhook-id (`data.id`, derived from
account and UIDL), so a receiver that deduplicates on it takes each at most once.

Which messages: the given UIDLs, or every message of the account fetched since DATE (from the
custody trail), or with neither, every message the trail knows for the account. A message whose
outbox row the store still holds is put back to pending; one whose row is gone (pruned after it
left the server, or a lost store) is fetched from the server again when it is still there (read
only: no DELE, no QUIT). The rows are then delivered by this command, like `once` delivers.

It says how many messages it requeued, fetched again, delivered, and could not find. Exit 0
when every message was found and delivered, 1 otherwise, 2 for a configuration problem.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import sys
import time
from typing import Any

from bridge.commands._common import EXIT_FAILED, EXIT_OK, add_config_argument, run_with_settings
from bridge.delivery.ids import msg_id_for
from bridge.poller.resources import PollerRuntime
from bridge.pop3.errors import POP3Error
from bridge.store.errors import StoreError

HELP = "send an account's messages again with their original webhook-id"


def _since(text: str) -> float:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+00:00]"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--account", required=True, help="the account whose mail to replay")
    parser.add_argument(
        "--since",
        type=_since,
        metavar="DATE",
        help="only messages fetched at or after DATE (ISO 8601; UTC when no offset is given)",
    )
    parser.add_argument(
        "--uidl", nargs="+", default=[], metavar="U", help="only these UIDLs (one or more)"
    )
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")


async def _targets(rt: PollerRuntime, args: argparse.Namespace) -> dict[str, str]:
    """msg_id -> uidl of the messages to replay."""
    if args.uidl:
        return {msg_id_for(args.account, u): u for u in args.uidl}
    found: dict[str, str] = {}
    for msg_id in await rt.store.custody_lookup(account=args.account, since=args.since):
        trail = await rt.store.custody_trail(msg_id)
        if trail:
            found[msg_id] = trail[0].uidl
    return found


async def _refetch(rt: PollerRuntime, spec: Any, wanted: dict[str, str]) -> tuple[int, list[str]]:
    """Fetch messages whose rows are gone; (how many were recorded, msg_ids not found)."""
    from bridge.poller.poll import account_outbox_row, connect_and_login

    session = "replay-" + secrets.token_hex(4)
    client = await connect_and_login(spec)
    try:
        numbers = {uidl: n for n, uidl in await client.uidl()}
        present = {m: u for m, u in wanted.items() if u in numbers}
        messages = []
        for uidl in present.values():
            raw = await client.retrieve(numbers[uidl])
            row = await account_outbox_row(
                spec,
                uidl,
                len(raw),
                raw,
                oversize=False,
                now=time.time(),
                defer=True,
                session=session,
            )
            messages.append(row)
    finally:
        client.abort()  # read only: no DELE was sent, and no QUIT commits anything
    if messages:
        await rt.store.record(messages, time.time(), replay=True)
    return len(messages), sorted(set(wanted) - set(present))


async def _replay(settings: Any, args: argparse.Namespace) -> int:
    async with PollerRuntime(settings) as rt:
        specs = {s.name: s for s in await rt.accounts()}
        spec = specs.get(args.account)
        if spec is None:
            print(f"replay: no account named {args.account!r}", file=sys.stderr)
            return EXIT_FAILED
        targets = await _targets(rt, args)
        requeued = await rt.store.requeue(list(targets), time.time())
        missing = {m: u for m, u in targets.items() if m not in set(requeued)}
        fetched, not_found = 0, sorted(missing)
        if missing:
            try:
                fetched, not_found = await _refetch(rt, spec, missing)
            except (POP3Error, OSError) as exc:
                print(f"replay: cannot fetch from {args.account!r} again: {exc}", file=sys.stderr)
        app = rt.app()
        delivered = await app.worker.deliver_due()
        pending = await rt.store.pending_count(args.account)
    counts = {
        "account": args.account,
        "selected": len(targets),
        "requeued": len(requeued),
        "fetched_again": fetched,
        "not_found": len(not_found),
        "delivered": delivered,
        "pending": pending,
    }
    if args.json:
        print(json.dumps({**counts, "not_found_uidls": [targets[m] for m in not_found]}))
    else:
        print(
            f"replay {args.account}: {len(targets)} selected, {len(requeued)} requeued, "
            f"{fetched} fetched from the server again, {len(not_found)} not found, "
            f"{delivered} delivered, {pending} still pending"
        )
        for msg_id in not_found:
            print(f"  not found: uidl {targets[msg_id]} ({msg_id})", file=sys.stderr)
    return EXIT_OK if not not_found and pending == 0 else EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    return run_with_settings(
        args,
        lambda settings: _replay(settings, args),
        command="replay",
        failures=(StoreError,),
    )

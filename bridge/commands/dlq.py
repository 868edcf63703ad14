"""`pop3bridge dlq list` and `pop3bridge dlq replay ID...|--all`: the dead-letter list.

A dead letter is a message whose delivery failed for good (a permanent 4xx, or the retry
schedule ran out). It keeps its payload and `webhook-id`; replaying puts it back in the outbox,
due now with attempts reset, and a running poller (or the next `once`) delivers it. Its
attachment links are minted afresh: they expire `attachments.url_ttl` after the replay.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import Any

from bridge.commands._common import EXIT_FAILED, EXIT_OK, add_config_argument, run_with_settings
from bridge.poller.resources import PollerRuntime
from bridge.store.errors import StoreError

HELP = "list or replay dead-lettered deliveries"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    sub = parser.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="print dead letters, oldest failure first")
    ls.add_argument(
        "--limit",
        type=int,
        default=100,
        metavar="N",
        help="print at most N dead letters (default: %(default)s)",
    )
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    rp = sub.add_parser("replay", help="put dead letters back into the outbox")
    rp.add_argument(
        "ids",
        nargs="*",
        metavar="ID",
        help="a dead letter's number (first column of `dlq list`) or its webhook-id (msg_...)",
    )
    rp.add_argument("--all", action="store_true", help="replay every dead letter")


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


async def _dlq(settings: Any, args: argparse.Namespace) -> int:
    async with PollerRuntime(settings, with_sender=False) as rt:
        if args.dlq_command == "list":
            letters = await rt.store.dead_letters(limit=args.limit)
            for d in letters:
                if args.json:
                    row = {
                        "id": d.id,
                        "msg_id": d.msg_id,
                        "account": d.account,
                        "uidl": d.uidl,
                        "webhook": d.webhook,
                        "attempts": d.attempts,
                        "failed_at": _iso(d.failed_at),
                        "last_status": d.last_status,
                        "last_error": d.last_error,
                    }
                    print(json.dumps(row))
                else:
                    print(
                        f"{d.id}\t{_iso(d.failed_at)}\t{d.account}\t{d.msg_id}\t"
                        f"attempts={d.attempts}\tstatus={d.last_status}\t{d.last_error or ''}"
                    )
            if not letters and not args.json:
                print("no dead letters", file=sys.stderr)
            return EXIT_OK
        if args.all == bool(args.ids):
            print("dlq replay: give dead-letter IDs or --all (not both)", file=sys.stderr)
            return EXIT_FAILED
        try:
            ids = await _row_ids(rt.store, args.ids)
        except ValueError as exc:
            print(f"dlq replay: {exc}", file=sys.stderr)
            return EXIT_FAILED
        now = time.time()
        expire = None if rt.links is None else rt.links.expiry(now)
        count = await rt.store.replay(None if args.all else ids, now, links_expire=expire)
        print(f"replayed {count} dead letter(s)")
        if args.ids and count < len(set(args.ids)):
            print("some IDs were not dead letters and were ignored", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK


async def _row_ids(store: Any, given: list[str]) -> list[int]:
    """Outbox row ids for `given`: numbers as they are, `msg_...` webhook-ids looked up among
    the dead letters (one that is not a dead letter is left out, and reported by the caller
    like an unknown number)."""
    numbers: list[int] = []
    wanted: set[str] = set()
    for value in given:
        if value.startswith("msg_"):
            wanted.add(value)
        elif value.isdigit():
            numbers.append(int(value))
        else:
            raise ValueError(f"{value!r} is neither a dead-letter number nor a msg_... webhook-id")
    if wanted:
        letters = await store.dead_letters(limit=2**31 - 1)
        numbers += [d.id for d in letters if d.msg_id in wanted]
    return numbers


def run(args: argparse.Namespace) -> int:
    return run_with_settings(
        args,
        lambda settings: _dlq(settings, args),
        command="dlq",
        failures=(StoreError,),
        configure_logs=False,
    )

"""`pop3bridge reconcile --account A`: the mailbox against the bridge's ledger, read-only.

It logs in, reads UIDL, and drops the connection without QUIT (RFC 1939 section 6: nothing
changes on the server; no DELE is ever sent), then sorts every UIDL it knows of:

- `gap`: on the server but never recorded: the bridge has not seen it. Mail that arrived
  since the last poll is a gap until the next poll; anything older is worth a look.
- `pending`, `dead`: recorded, not delivered yet (waiting for a retry / a `dlq replay`).
- `delivered_on_server`: delivered and still on the server (expected with `keep`).
- `delivered_gone`: delivered and no longer on the server (from the custody trail, which
  outlives the outbox row for `retention.custody`).
- `skipped`: on the server and deliberately not delivered (`initial: new`, re-keyed copies).

Exit 0 when there is no gap, 1 otherwise (or when the server cannot be read), 2 for a
configuration problem. `--json` prints one document with every list.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bridge.commands._common import EXIT_FAILED, EXIT_OK, add_config_argument, run_with_settings
from bridge.poller.resources import PollerRuntime
from bridge.pop3.errors import POP3Error
from bridge.store.base import LedgerEntry
from bridge.store.errors import StoreError

HELP = "compare an account's mailbox with what the bridge recorded (never changes it)"

CATEGORIES = ("gap", "pending", "dead", "delivered_on_server", "delivered_gone", "skipped")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--account", required=True, help="the account to reconcile")
    parser.add_argument("--json", action="store_true", help="one JSON document with every list")


def classify(on_server: list[str], ledger: dict[str, LedgerEntry]) -> dict[str, list[str]]:
    """UIDLs by category (see the module docstring); pure, so it is tested on its own."""
    out: dict[str, list[str]] = {c: [] for c in CATEGORIES}
    here = set(on_server)
    for uidl in on_server:
        entry = ledger.get(uidl)
        if entry is None:
            out["gap"].append(uidl)
        elif entry.state in ("pending", "dead"):
            out[entry.state].append(uidl)
        elif entry.state == "delivered" or entry.delivered_at is not None:
            out["delivered_on_server"].append(uidl)
        else:
            out["skipped"].append(uidl)
    for uidl, entry in sorted(ledger.items()):
        if uidl in here or not uidl.strip() or uidl != uidl.strip():
            continue  # on the server (above), or the store's own marker rows
        if entry.state in ("pending", "dead"):
            out[entry.state].append(uidl)
        elif entry.state == "delivered" or entry.delivered_at is not None:
            out["delivered_gone"].append(uidl)
    return out


async def _reconcile(settings: Any, args: argparse.Namespace) -> int:
    from bridge.poller.poll import connect_and_login

    async with PollerRuntime(settings, with_sender=False) as rt:
        specs = {s.name: s for s in await rt.accounts()}
        spec = specs.get(args.account)
        if spec is None:
            known = ", ".join(sorted(specs)) or "none"
            print(f"reconcile: no account named {args.account!r} (accounts: {known})",
                  file=sys.stderr)  # fmt: skip
            return EXIT_FAILED
        try:
            client = await connect_and_login(spec)
            try:
                listing = await client.uidl()
            finally:
                client.abort()  # no QUIT: the mailbox is left exactly as it was
        except (POP3Error, OSError) as exc:
            print(f"reconcile: cannot read {args.account!r}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)  # fmt: skip
            return EXIT_FAILED
        ledger = await rt.store.ledger(args.account)
    on_server = [uidl for _, uidl in listing]
    result = classify(on_server, ledger)
    if args.json:
        doc = {"account": args.account, "on_server": len(on_server), **result}
        print(json.dumps(doc))
    else:
        print(f"account {args.account}: {len(on_server)} messages on the server")
        for category in CATEGORIES:
            print(f"  {category:<20} {len(result[category])}")
        for uidl in result["gap"]:
            print(f"  gap: {uidl}")
    return EXIT_FAILED if result["gap"] else EXIT_OK


def run(args: argparse.Namespace) -> int:
    return run_with_settings(
        args,
        lambda settings: _reconcile(settings, args),
        command="reconcile",
        failures=(StoreError,),
        configure_logs=False,
    )

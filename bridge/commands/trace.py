"""`pop3bridge trace`: where is message X, and can we prove it was delivered before it left?

    pop3bridge trace msg_3f2a...                # the webhook-id (= data.id of the payload)
    pop3bridge trace --account support --uidl 000001a2
    pop3bridge trace --message-id '<CAF=abc@mail.example.com>'

prints each message's custody trail (see `bridge.store.base.CustodyEvent`): fetched by which
poll session, every delivery attempt with the receiver's status, how long it took and the first
bytes of its answer, and the DELE and its QUIT. Text for people, `--json` for scripts. Never a
body or a secret. Exit 0 when at least one trail was found, 1 when none (unknown, or purged
`retention.custody` after delivery), 2 for a configuration problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bridge.commands._common import EXIT_FAILED, EXIT_OK, add_config_argument, run_with_settings
from bridge.poller.resources import PollerRuntime
from bridge.store.custody import trail_document
from bridge.store.errors import StoreError

HELP = "print the custody trail of a message: fetch, each delivery attempt, DELE, QUIT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "id", nargs="?", metavar="ID", help="webhook-id / data.id of the payload (msg_...)"
    )
    parser.add_argument("--account", help="with --uidl: the account the message came from")
    parser.add_argument("--uidl", help="with --account: the message's UIDL on the server")
    parser.add_argument(
        "--message-id", dest="message_id", help="the Message-ID header, e.g. '<abc@example>'"
    )
    parser.add_argument("--json", action="store_true", help="one JSON document per message")


def _line(event: dict[str, Any]) -> str:
    kind = event["event"]
    detail = event.get("detail") or {}
    parts = [f"{event['at']}  {kind:<10}"]
    if kind == "fetched":
        parts.append(f"session {event['session']}  size {detail.get('size')}")
    elif kind in ("delivered", "retry", "dead"):
        status = event.get("status")
        parts.append(f"HTTP {status}" if status is not None else "no response")
        if "duration_ms" in detail:
            parts.append(f"in {detail['duration_ms']} ms")
        if detail.get("error"):
            parts.append(f"error: {detail['error']}")
        if detail.get("response"):
            parts.append(f"answer: {json.dumps(detail['response'])}")
    elif kind == "dele_sent":
        parts.append(f"DELE sent by session {event['session']}")
    elif kind == "deleted":
        parts.append(f"QUIT +OK: the server removed it (session {event['session']})")
    elif kind == "vanished":
        parts.append("left the server without our DELE")
    return "  ".join(parts)


def _print_text(doc: dict[str, Any]) -> None:
    print(f"{doc['msg_id']}  account {doc['account']}  uidl {doc['uidl']}")
    if doc.get("message_id"):
        print(f"Message-ID {doc['message_id']}")
    for event in doc["events"]:
        print("  " + _line(event))
    print(f"verdict: {doc['verdict']}")


async def _trace(settings: Any, args: argparse.Namespace) -> int:
    async with PollerRuntime(settings, with_sender=False) as rt:
        if args.id:
            ids = [args.id]
        else:
            ids = await rt.store.custody_lookup(
                account=args.account, uidl=args.uidl, message_id=args.message_id
            )
        documents = []
        for msg_id in ids:
            events = await rt.store.custody_trail(msg_id)
            if events:
                documents.append(trail_document(events))
    for doc in documents:
        if args.json:
            print(json.dumps(doc))
        else:
            _print_text(doc)
    if not documents:
        print(
            "no custody trail found (unknown message, or purged retention.custody after delivery)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    given = [bool(args.id), bool(args.account or args.uidl), bool(args.message_id)]
    if sum(given) != 1 or bool(args.account) != bool(args.uidl):
        print(
            "trace: give an ID, or --account with --uidl, or --message-id (one of them)",
            file=sys.stderr,
        )
        return 2
    return run_with_settings(
        args,
        lambda settings: _trace(settings, args),
        command="trace",
        failures=(StoreError,),
        configure_logs=False,
    )

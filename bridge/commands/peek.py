"""`pop3bridge peek --account NAME [--limit N]`: print the payloads an account would produce.

No side effects anywhere: the state database is not opened, nothing is recorded or delivered,
and the POP3 session ends by dropping the connection instead of QUIT, so even servers that
delete retrieved mail on QUIT (Gmail's "recent" mode, `EXPIRE 0`) keep everything.
Output is one JSON document per line: the exact webhook body the poller would sign.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from bridge.commands._common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    ConfigProblem,
    add_config_argument,
    load,
    report_config_problem,
)
from bridge.poller.build import account_spec
from bridge.poller.oauth import OAuthError
from bridge.poller.poll import account_outbox_row, connect_and_login
from bridge.poller.spec import AccountSpec
from bridge.pop3.errors import POP3Error

HELP = "print the payloads an account would produce, as JSON lines, without side effects"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--account", required=True, metavar="NAME", help="account to look at")
    parser.add_argument(
        "--limit", type=int, default=10, metavar="N", help="at most N messages (default 10)"
    )


async def peek(spec: AccountSpec, limit: int, out: Any = None) -> int:
    """Write up to `limit` payloads (oldest first) to `out`; returns how many."""
    out = out or sys.stdout
    client = await connect_and_login(spec)
    count = 0
    async with client:  # leaving the block aborts: no QUIT, nothing changes on the server
        listing = (await client.uidl())[: max(0, limit)]
        sizes = dict(await client.list()) if listing else {}
        normal = [(n, u) for n, u in listing if sizes.get(n, 0) <= spec.max_message_size]
        bodies: dict[int, bytes] = {}
        async for n, raw in client.retrieve_many([n for n, _ in normal]):
            bodies[n] = raw
        for n, uidl in listing:
            oversize = n not in bodies
            raw = bodies.pop(n) if not oversize else await client.top(n, 0)
            size = sizes.get(n, len(raw)) if oversize else len(raw)
            message = await account_outbox_row(
                spec, uidl, size, raw, oversize=oversize, now=time.time()
            )
            out.write(message.payload.decode("utf-8") + "\n")
            count += 1
    return count


def run(args: argparse.Namespace) -> int:
    try:
        settings = load(args)
    except ConfigProblem as exc:
        return report_config_problem(exc)
    accounts = {a.name: a for a in settings.accounts}
    account = accounts.get(args.account)
    if account is None:
        known = ", ".join(sorted(accounts)) or "none"
        print(f"peek: no account named {args.account!r} (configured: {known})", file=sys.stderr)
        return EXIT_CONFIG
    webhook = next((w for w in settings.webhooks if w.name == account.webhook), None)
    spec = account_spec(account, webhook, {})
    try:
        asyncio.run(peek(spec, args.limit))
    except (POP3Error, OAuthError) as exc:
        print(f"peek: {args.account}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK

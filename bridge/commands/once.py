"""`pop3bridge once`: one poll of every account, deliver what is due, exit.

Exit status 0 only if every account was polled and nothing is left in the outbox; 1 otherwise
(an account failed, or deliveries are waiting for a retry or were dead-lettered); 2 for an
invalid configuration. Cron jobs and tests rely on that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from bridge.poller.runtime import (
    EXIT_FAILED,
    EXIT_OK,
    ConfigProblem,
    Runtime,
    add_config_argument,
    configure_logging,
    load,
    report_config_problem,
)
from bridge.store.errors import StoreError

HELP = "poll every account once, deliver what is due, exit (non-zero if anything failed)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


async def _once(settings: object) -> int:
    async with Runtime(settings) as rt:
        result = await rt.app().once()
        dead = len(await rt.store.dead_letters(limit=1))
    summary = {
        "ok": result.ok and not dead,
        "accounts": {
            name: (
                {"error": f"{type(r).__name__}: {r}"}
                if isinstance(r, BaseException)
                else {"new": r.recorded, "deleted": r.deleted, "rekeyed": r.rekeyed}
            )
            for name, r in result.reports
        },
        "delivered": result.delivered,
        "pending": result.pending,
    }
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return EXIT_OK if summary["ok"] else EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    try:
        settings = load(args)
    except ConfigProblem as exc:
        return report_config_problem(exc)
    configure_logging(settings)
    try:
        return asyncio.run(_once(settings))
    except StoreError as exc:
        print(f"pop3bridge once: {exc}", file=sys.stderr)
        return EXIT_FAILED

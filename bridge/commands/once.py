"""`pop3bridge once`: one poll of every account, deliver what is due, exit.

Exit status 0 only if every account was polled and nothing is left in the outbox; 1 otherwise
(an account failed, or deliveries are waiting for a retry or were dead-lettered); 2 for an
invalid configuration. Cron jobs and tests rely on that.
"""

from __future__ import annotations

import argparse
import json
import sys

from bridge.commands._common import EXIT_FAILED, EXIT_OK, add_config_argument, run_with_settings
from bridge.poller.runtime import Runtime
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
    return run_with_settings(args, _once, command="once", failures=(StoreError,))

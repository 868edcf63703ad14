"""`pop3bridge once`: one poll of every account, deliver what is due, exit.

Exit status 0 only if every account was polled and nothing is left in the outbox; 1 otherwise
(an account failed, or deliveries are waiting for a retry or were dead-lettered); 2 for an
invalid configuration. Cron jobs and tests rely on that.

Stdout gets one JSON object: per account what its poll found (or its error), then what this
run did with deliveries (`delivered`, `retry_later`, `dead_lettered`, `accounts_failed`), then
what the store holds now (`pending`, `dead_letters`: rows waiting for a retry or a replay). A
failed poll is also logged at ERROR, as `run` logs it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

from bridge.commands._common import (
    EXIT_FAILED,
    EXIT_OK,
    add_config_argument,
    run_with_settings,
    settled,
    starting,
)
from bridge.store.errors import StoreError

HELP = "poll every account once, deliver what is due, exit (non-zero if anything failed)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


async def _once(settings: object) -> int:
    # The parse pool takes the worker `run` forked, or starts one, once new mail is found
    # (`ParsePool.warm`); the sender (aiohttp) is opened once there is something to deliver.
    # Until the runtime is up, and while the sender is opened, the garbage collector waits
    # (`starting`).
    from bridge.runtime import start_parse_pool

    async with contextlib.AsyncExitStack() as stack:
        with starting():
            pool = start_parse_pool(settings)
            if pool is not None:
                stack.callback(pool.close)
            from bridge.poller.resources import PollerRuntime

            # The sender (aiohttp) is opened when there is something to deliver.
            rt = await stack.enter_async_context(
                PollerRuntime(settings, pool=pool, defer_sender=True)
            )
        # The runtime is up: settle as `run` does (freeze it, raise the young generation's
        # threshold). Each delivery leaves aiohttp's request, response, futures and tasks
        # alive across its awaits, ~16 at a time, so at CPython's 700 the collector ran 123
        # young and 10 middle collections for 2,000 bench messages (37 and 3 after this):
        # 5.53 vs 5.61 G instructions for the whole `once` (callgrind; BENCHMARKS.md §1).
        settled()

        async def open_sender() -> object:
            # aiohttp's import, when there is mail to deliver, without the collector too.
            with starting():
                return await rt.open_sender()

        result = await rt.app(open_sender=open_sender).once()
        dead = sum(s.dead for s in await rt.store.account_stats(time.time()))
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
        # What happened in this run (each message counted once, by its outcome)...
        "delivered": result.delivered,
        "retry_later": result.retried,
        "dead_lettered": result.dead,
        "accounts_failed": result.failed_accounts,
        # ...and what the store holds afterwards.
        "pending": result.pending,
        "dead_letters": dead,
    }
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return EXIT_OK if summary["ok"] else EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    # The default parse worker, forked before the configuration is read (bridge/outbox/
    # _early.py): ready when the first message is, where a spawned one answered ~110 ms after
    # the first UIDL listing (bench/startup.py). Settings without that one worker, or the end
    # of the run, discard it.
    with starting():  # the parser's import, then frozen: the collector leaves it unshared
        from bridge.outbox._early import discard_forked, fork_worker
    fork_worker(os.environ)
    try:
        return run_with_settings(args, _once, command="once", failures=(StoreError,))
    finally:
        discard_forked()

"""`pop3bridge run`: poll and deliver until SIGTERM/SIGINT, then shut down without losing mail.

With `attachments.enabled`, `run` also serves the attachment links (bridge/attachments/server.py)
and sweeps their expired content; `once` does not (it exits, and its links would then answer
nothing until a `run` serves them from the same store).

On the first signal the bridge stops starting polls, lets sessions in progress record what they
fetched and QUIT, gives deliveries in flight `poller.shutdown_grace` seconds, closes the store and
exits 0. A second signal does not wait any longer: sessions are dropped without QUIT (the server
keeps everything) and unfinished deliveries come back after the restart.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from bridge.attachments.server import LinkServerError
from bridge.commands._common import (
    EXIT_OK,
    add_config_argument,
    run_with_settings,
    serve_links,
    settled,
    stop_on_signals,
)
from bridge.ops.server import OpsEndpointError
from bridge.poller.resources import PollerRuntime
from bridge.store.errors import StoreError

HELP = "poll every account and deliver until SIGTERM/SIGINT"

log = logging.getLogger("bridge.commands.run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


async def _run(settings: Any) -> int:
    stop = stop_on_signals(log, what="shutting down", second="stopping now")
    async with PollerRuntime(settings) as rt:
        from bridge.poller.observe import Observer

        observer = Observer(rt.store, oauth=rt.oauth_states)
        app = rt.app(
            on_poll=observer.on_poll,
            on_delivery=observer.on_delivery,
            on_leases=observer.on_leases,
        )
        observer.canaries = app.scheduler.canaries
        app.scheduler.on_started = settled
        async with observer.serving(settings), serve_links(rt.store, settings):
            log.info("pop3bridge running", extra={"replica": app.options.replica_id})
            await app.run(stop)
    log.info("pop3bridge stopped")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    return run_with_settings(
        args, _run, command="run", failures=(StoreError, OpsEndpointError, LinkServerError)
    )

"""`pop3bridge proxy`: run the transparent POP3 proxy until SIGTERM/SIGINT.

Bound addresses are printed on stdout, one line per listener (``listening NAME HOST PORT``),
as soon as every listener is up, so a script that configured port 0 can read where to connect;
with `logging.format: json` each such line is a JSON object with ``event``, ``listener``,
``host`` and ``port`` fields instead, so everything the process writes is JSON.
On the first signal the proxy stops accepting and gives running sessions
`proxy.shutdown_grace` seconds; a second signal closes them at once (no session is ever
committed on a client's behalf: closing without QUIT leaves every mailbox as it was).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

from bridge.commands._common import (
    EXIT_CONFIG,
    EXIT_OK,
    add_config_argument,
    run_with_settings,
    serve_links,
    stop_on_signals,
)
from bridge.ops.logging import console
from bridge.ops.server import OpsEndpointError

HELP = "run the transparent POP3 proxy"

log = logging.getLogger("bridge.commands.proxy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


async def _run(settings: Any) -> int:
    from bridge.proxy.server import ProxyServer

    stop = stop_on_signals(log, what="proxy shutting down", second="closing sessions now")
    from bridge.proxy.tap import build_tap

    async with build_tap(settings) as tap:
        factory = None
        if tap is not None:

            def factory(route: Any, listener: str, user: str | None, msgno: int) -> Any:
                return tap.begin(user=user or "", route=route.name, listener=listener, msgno=msgno)

        server = ProxyServer(settings.proxy, tap=factory)
        await server.start()
        try:
            for name, (host, port) in server.addresses.items():
                console(
                    f"listening {name} {host} {port}",
                    logger=log.name,
                    event="listening",
                    listener=name,
                    host=host,
                    port=port,
                )
            # Links in the tap's copies are served here too (or by a `run` on the same store).
            links = contextlib.nullcontext() if tap is None else serve_links(tap.store, settings)
            async with _ops(settings, server), links:
                await stop.wait()
        finally:
            await server.stop()
    log.info("proxy stopped")
    return EXIT_OK


@contextlib.asynccontextmanager
async def _ops(settings: Any, server: Any) -> AsyncIterator[None]:
    ops = settings.ops
    if not ops.enabled:
        yield
        return
    from bridge.ops.server import OpsServer

    endpoint = OpsServer(
        ops.host, int(ops.port), readiness_checks=[server.ready], status_provider=server.status
    )
    await endpoint.start()
    console(f"ops {endpoint.url}", logger=log.name, event="ops", url=endpoint.url)
    try:
        yield
    finally:
        await endpoint.stop()


def _has_listeners(settings: Any) -> int | None:
    if settings.proxy.listeners:
        return None
    print("pop3bridge proxy: no proxy.listeners configured", file=sys.stderr)
    return EXIT_CONFIG


def run(args: argparse.Namespace) -> int:
    from bridge.attachments.server import LinkServerError
    from bridge.proxy.server import ProxyStartError

    return run_with_settings(
        args,
        _run,
        command="proxy",
        failures=(ProxyStartError, OpsEndpointError, LinkServerError),
        check=_has_listeners,
    )

"""`pop3bridge demo`: a built-in POP3 server, webhook receiver and the bridge between them.

See `bridge.poller.demo`. `--duration SECONDS` exits by itself (tests use it); without it the
demo runs until Ctrl-C. It needs no configuration file and touches nothing outside a temporary
directory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

HELP = "a built-in POP3 server, webhook receiver and the bridge between them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", type=float, default=None, metavar="SECONDS", help="stop after this long"
    )
    parser.add_argument("--config", help=argparse.SUPPRESS)  # accepted for uniformity, unused


def run(args: argparse.Namespace) -> int:
    from bridge.poller.demo import run_demo

    # The demo's own lines are the interesting output; keep the bridge's logs to warnings.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    receiver = asyncio.run(run_demo(sys.stdout, args.duration))
    return 0 if receiver.received and all(r["verified"] for r in receiver.received) else 1

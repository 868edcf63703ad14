"""`pop3bridge demo`: a built-in POP3 server, webhook receiver and the bridge between them.

See `bridge.demo`. `--duration SECONDS` exits by itself (tests use it); without it the
demo runs until Ctrl-C. It needs no configuration file and touches nothing outside a temporary
directory.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

HELP = "a built-in POP3 server, webhook receiver and the bridge between them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", type=float, default=None, metavar="SECONDS", help="stop after this long"
    )
    parser.add_argument(
        "--ops-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve the ops endpoint on 127.0.0.1:PORT (default: any free port)",
    )


def run(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo
    from bridge.ops.logging import configure_logging

    # The demo's own lines are the interesting output; keep the bridge's logs (the same
    # redacting handler every command uses, in its human format) to warnings.
    configure_logging("text", "WARNING")
    receiver = asyncio.run(run_demo(sys.stdout, args.duration, ops_port=args.ops_port))
    return 0 if receiver.received and all(r["verified"] for r in receiver.received) else 1

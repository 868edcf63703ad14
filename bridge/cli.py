"""The `pop3bridge` command line.

Each subcommand lives in its own module under `bridge.commands` exposing `HELP` (one line),
`add_arguments(parser)` and `run(args) -> int`. Modules are imported only when their subcommand
runs, so `pop3bridge probe` does not pay for aiohttp or the database drivers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Mapping, Sequence

# name -> one-line help. The order is the order `--help` shows.
SUBCOMMANDS: dict[str, str] = {
    "run": "poll every account and deliver until SIGTERM/SIGINT",
    "once": "poll every account once, deliver what is due, exit (non-zero if anything failed)",
    "peek": "print the payloads an account would produce, as JSON lines, without side effects",
    "demo": "a built-in POP3 server, webhook receiver and the bridge between them",
    "probe": "check one POP3 account and print what the server offers, as JSON",
    "dlq": "list or replay dead-lettered deliveries",
    "accounts": "add, list or remove accounts kept in the state database",
    "proxy": "run the transparent POP3 proxy",
    "config": "validate the configuration or print its reference",
}

EXIT_USAGE = 2
# `uvloop` runs every command on uvloop (install the `speed` extra): about 15-20 % more messages
# per second end to end on the poller benchmark (BENCHMARKS.md). Opt-in, so the event loop the
# test suite exercises stays the default.
EVENT_LOOP_ENV = "POP3BRIDGE_EVENT_LOOP"


class EventLoopUnavailable(ValueError):
    """`POP3BRIDGE_EVENT_LOOP` names an unknown loop, or uvloop is not installed."""


def use_event_loop(env: Mapping[str, str]) -> str:
    """Install the event loop policy `env` asks for; returns the loop in use."""
    choice = env.get(EVENT_LOOP_ENV, "asyncio").strip().lower() or "asyncio"
    if choice == "asyncio":
        return choice
    if choice != "uvloop":
        raise EventLoopUnavailable(
            f"{EVENT_LOOP_ENV} must be 'asyncio' or 'uvloop', not {choice!r}"
        )
    try:
        import uvloop
    except ImportError:
        raise EventLoopUnavailable(
            f"{EVENT_LOOP_ENV}=uvloop but uvloop is not installed (pip install 'pop3bridge[speed]')"
        ) from None
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return choice


def _load(name: str) -> object:
    return importlib.import_module(f"bridge.commands.{name}")


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pop3bridge",
        description="POP3 mailboxes to signed webhooks, and a transparent POP3 proxy.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen subcommand's module is imported to build its arguments.
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, help_text in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = _load(name)
            module.add_arguments(p)  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    # Every subcommand logs through the one redacting handler from its first line on; commands
    # that read a configuration then switch it to `logging.format`/`level`. Without this, a
    # warning from a command that never configures logging would reach stderr unredacted
    # through Python's last-resort handler.
    from bridge.ops.logging import configure_logging

    configure_logging("text", "WARNING")
    try:
        use_event_loop(os.environ)
    except EventLoopUnavailable as exc:
        print(f"pop3bridge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    module = _load(args.command)
    code: int = module.run(args)  # type: ignore[attr-defined]
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

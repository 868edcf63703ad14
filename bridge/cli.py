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
from typing import NoReturn

# name -> one-line help. The order is the order `--help` shows.
SUBCOMMANDS: dict[str, str] = {
    "run": "poll every account and deliver until SIGTERM/SIGINT",
    "once": "poll every account once, deliver what is due, exit (non-zero if anything failed)",
    "peek": "print the payloads an account would produce, as JSON lines, without side effects",
    "demo": "a built-in POP3 server, webhook receiver and the bridge between them",
    "probe": "check one POP3 account and print what the server offers, as JSON",
    "dlq": "list or replay dead-lettered deliveries",
    "trace": "print the custody trail of a message: fetch, each delivery attempt, DELE, QUIT",
    "reconcile": "compare an account's mailbox with what the bridge recorded (never changes it)",
    "replay": "send an account's messages again with their original webhook-id",
    "accounts": "add, list or remove accounts kept in the state database",
    "proxy": "run the transparent POP3 proxy",
    "config": "validate the configuration or print its reference",
}

EXIT_USAGE = 2
# `POP3BRIDGE_EVENT_LOOP=uvloop` runs any command on uvloop (the `speed` extra), `asyncio` on
# the standard loop. Without it, `proxy` and `run` run on uvloop whenever uvloop is installed
# and every other command on asyncio. The proxy is a loop of small socket reads and
# writes, which is what uvloop speeds up: 7-38 % less proxy CPU per sequential command, poplib
# through the proxy 0.58 -> 0.62x direct, pipelined 0.96 -> 1.01x (bench/proxy.py, 7 alternated
# rounds, 29 Nov 2026). `run` with many idle accounts is the same kind of load (a short session
# of small exchanges per poll): 0.99 -> 0.83 ms of CPU per idle poll (bench/many_accounts.py's
# idle phase at 2,000 accounts / 12 s, 2 Dec 2026, load ~5; BENCHMARKS.md section 2). `once`
# stays on asyncio: on uvloop its own process runs 3.8 % fewer instructions delivering 2,000
# bench messages, but its whole process tree's CPU and its wall time are level (0.534 vs 0.526
# ms a message, 1,937 vs 1,986 msg/s, 9 alternated rounds), its first POST comes 67-77 ms later
# (the fetch keeps the loop), and an `once` with nothing new pays the import (+7.7 M
# instructions): 3 Dec 2026, BENCHMARKS.md section 1.
EVENT_LOOP_ENV = "POP3BRIDGE_EVENT_LOOP"


class EventLoopUnavailable(ValueError):
    """`POP3BRIDGE_EVENT_LOOP` names an unknown loop, or uvloop is not installed."""


UVLOOP_BY_DEFAULT = frozenset({"proxy", "run"})


def use_event_loop(env: Mapping[str, str], command: str | None = None) -> str:
    """Install the event loop policy `env` asks for (or `command`'s default); returns it."""
    choice = env.get(EVENT_LOOP_ENV, "").strip().lower()
    if not choice:
        choice = "uvloop" if command in UVLOOP_BY_DEFAULT and _has_uvloop() else "asyncio"
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


def _has_uvloop() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def _load(name: str) -> object:
    return importlib.import_module(f"bridge.commands.{name}")


# Commands that read no configuration still accept `--config` (a wrapper script or an alias
# may put it on every invocation), and say in their help that they ignore it.
READS_NO_CONFIG = frozenset({"probe", "demo"})


def _chosen(argv: Sequence[str]) -> str | None:
    """The subcommand named in `argv`, skipping the value of a `--config` before it."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--config":
            skip = True
        elif arg in SUBCOMMANDS:
            return arg
    return None


def _config_everywhere(parser: argparse.ArgumentParser, help_text: str) -> None:
    """`--config` on `parser` and on every parser below it (`dlq list`, `accounts add`...),
    so that it works before or after any (sub)subcommand and shows in every `--help`."""
    from bridge.commands._common import add_config_argument

    add_config_argument(parser, help_text)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _config_everywhere(child, help_text)


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    from bridge import __version__
    from bridge.commands._common import CONFIG_HELP, add_config_argument

    parser = argparse.ArgumentParser(
        prog="pop3bridge",
        description="POP3 mailboxes to signed webhooks, and a transparent POP3 proxy.",
    )
    parser.add_argument("--version", action="version", version=f"pop3bridge {__version__}")
    add_config_argument(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen subcommand's module is imported to build its arguments.
    chosen = _chosen(argv)
    for name, help_text in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = _load(name)
            module.add_arguments(p)  # type: ignore[attr-defined]
        unused = f"accepted for uniformity; `{name}` reads no configuration"
        _config_everywhere(p, unused if name in READS_NO_CONFIG else CONFIG_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns its exit status.

    Called without `argv` (the console script, `python -m bridge`), this is the whole process:
    it then ends the process itself right after the command (`exit_now`) instead of returning.
    Called with `argv` (tests, embedding), it returns like any function.
    """
    if argv is None:
        from bridge.commands._common import own_process

        own_process()
        exit_now(_main(sys.argv[1:]))
    return _main(argv)


def exit_now(code: int) -> NoReturn:
    """End the process with `code`: `atexit` hooks run and output is flushed, as on any exit,
    but the interpreter's teardown (destroying every module and object one by one) is skipped.

    That teardown took about 50 ms after `pop3bridge once`, 3 % of a 2,000-message run, for
    nothing: by then every command has closed its store, sockets and worker threads itself.
    The ordinary exit runs instead when a non-daemon thread is still alive (work it would
    wait for) or a profiler or tracer is installed (`python -m pyinstrument`, `cProfile`,
    `trace` write their reports after the program returns). A failure to flush (stdout
    closed by a pipe reader, say) turns a success into status 120, as Python's own exit does.
    """
    import atexit
    import threading

    main_thread = threading.main_thread()
    others = [t for t in threading.enumerate() if t is not main_thread and not t.daemon]
    if (
        sys.getprofile() is not None
        or sys.gettrace() is not None
        or any(t.is_alive() for t in others)
    ):
        sys.exit(code)
    atexit._run_exitfuncs()  # logging.shutdown among them: every log handler flushed
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120
    os._exit(code)


def _main(argv: Sequence[str]) -> int:
    from bridge.commands._common import starting

    args_list = list(argv)
    with starting():  # the imports, without the garbage collector
        parser = build_parser(args_list)
        args = parser.parse_args(args_list)
        # Every subcommand logs through the one redacting handler from its first line on;
        # commands that read a configuration then switch it to `logging.format`/`level`.
        # Without this, a warning from a command that never configures logging would reach
        # stderr unredacted through Python's last-resort handler.
        from bridge.ops.logging import configure_logging

        configure_logging("text", "WARNING")
        try:
            use_event_loop(os.environ, args.command)
        except EventLoopUnavailable as exc:
            print(f"pop3bridge: {exc}", file=sys.stderr)
            return EXIT_USAGE
        module = _load(args.command)
    code: int = module.run(args)  # type: ignore[attr-defined]
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

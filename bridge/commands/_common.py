"""What the subcommands share: `--config`, loading it, exit codes, logging, signals, and the
load -> configure -> `asyncio.run` -> report sequence most of them are.

Kept in the commands package (not the poller) because it is about being a command line program:
argparse, exit statuses, stderr and signals. Nothing here imports aiohttp or a database driver,
so `pop3bridge probe` stays quick to start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from typing import Any

__all__ = [
    "CONFIG_HELP",
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_OK",
    "ConfigProblem",
    "NoConfiguration",
    "add_config_argument",
    "configure_logging",
    "load",
    "report_config_problem",
    "run_with_settings",
    "settled",
    "starting",
    "stop_on_signals",
]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


class ConfigProblem(Exception):
    """The configuration is invalid; the message says which key and why (exit code 2)."""


class NoConfiguration(ConfigProblem):
    """No configuration was given at all (exit code 2); the message says how to give one."""


CONFIG_HELP = "YAML configuration file (default: $POP3BRIDGE_CONFIG)"

# Set by `bridge.cli.main` when the command is the whole process (not a call from a test).
_owns_process = False


def own_process() -> None:
    """Let `starting` pause the garbage collector: this process runs one command and exits."""
    global _owns_process
    _owns_process = True


@contextlib.contextmanager
def starting() -> Iterator[None]:
    """Run a start-up step (imports, building the settings) without the cyclic garbage
    collector, then freeze what it built.

    Start-up allocates a few hundred thousand long-lived objects (modules, classes, pydantic's
    validators) and almost no garbage; the collector traversed them about 120 times, 30 ms of
    the 340 ms `pop3bridge once` spends before its first POST (bench/startup.py). Frozen
    (`gc.freeze`), they are never traversed again, which also makes every later full
    collection of a long `run` cheaper. Only when this process is the command's own
    (`own_process`): a test calling `bridge.cli.main(argv)` keeps its collector as it is.
    """
    if not _owns_process or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def settled() -> None:
    """Freeze what a long-running command built once it is running (`pop3bridge run`: the
    account loops, specs and metric series, after the first account-list refresh; `once`:
    its runtime), as `starting` does for start-up, so full collections no longer traverse it.

    With 10,000 accounts that heap made each full collection about 0.5 s of CPU (one in 40 s
    at 250 idle polls/s; bench/many_accounts.py). Frozen objects are still freed when their
    last reference goes; only a reference cycle among them (an account's loop removed later)
    stays until exit. Only when this process is the command's own (`own_process`).

    It also raises the youngest generation's threshold from 700 to `YOUNG_THRESHOLD`: every
    idle poll leaves a few hundred container objects (coroutines, futures, the session's
    framer) alive across its awaits, so with sessions side by side on a tick the default
    collected the young generation every few polls, about 3-4 % of an idle poll's CPU
    (perf, callgrind). The count is of objects allocated and not yet freed, so what a poll
    frees itself never counts: the larger threshold only lets up to that many more live
    objects, and any garbage cycles among them, wait for the next collection.
    """
    if _owns_process and gc.isenabled():
        gc.freeze()
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


# The young generation's threshold once `run` or `once` has settled (`settled`; CPython's 700).
YOUNG_THRESHOLD = 10_000


def add_config_argument(parser: argparse.ArgumentParser, help: str = CONFIG_HELP) -> None:
    """`--config FILE` on `parser`, unless it has one already.

    The default is SUPPRESS, not the environment: argparse copies a subparser's defaults over
    what the parent parsed, so a default here would erase `pop3bridge --config F dlq list`'s
    F. An absent option leaves `args.config` unset and `load` falls back to
    `$POP3BRIDGE_CONFIG` (the loader reads it).
    """
    if any("--config" in action.option_strings for action in parser._actions):
        return
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=help)


# Environment variables that configure something to run (a store, webhooks, accounts or the
# proxy). POP3BRIDGE_OPS__* and POP3BRIDGE_LOGGING__* alone do not: the container image sets
# the ops ones for everyone.
_SUBSTANTIVE_ENV = tuple(
    f"POP3BRIDGE_{section}__" for section in ("STATE", "WEBHOOKS", "ACCOUNTS", "PROXY", "POLLER")
)

NO_CONFIGURATION = (
    "no configuration given: pass --config FILE (before or after the command), or set "
    "POP3BRIDGE_CONFIG=FILE, or set keys as POP3BRIDGE_* variables; see docs/configuration.md"
)


def configuration_given(args: argparse.Namespace, env: Mapping[str, str]) -> bool:
    """Whether the user gave any configuration at all: a file, or variables for a section."""
    if getattr(args, "config", None) or env.get("POP3BRIDGE_CONFIG"):
        return True
    return any(name.startswith(_SUBSTANTIVE_ENV) for name in env)


def load(args: argparse.Namespace) -> Any:
    """Validated settings, or `ConfigProblem` with the loader's key-by-key message.

    With no configuration at all, the built-in defaults would run against
    /var/lib/pop3bridge/state.db and report that it cannot be written, which sends the user
    after the wrong problem: say what is missing and how to give it instead.
    """
    from bridge.config import ConfigError, load_settings

    if not configuration_given(args, os.environ):
        raise NoConfiguration(NO_CONFIGURATION)
    try:
        return load_settings(getattr(args, "config", None), os.environ)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None


def configure_logging(settings: Any) -> None:
    from bridge.ops.logging import configure_logging as configure

    section = getattr(settings, "logging", None)
    configure(getattr(section, "format", "json"), getattr(section, "level", "INFO"))


def report_config_problem(exc: ConfigProblem) -> int:
    if isinstance(exc, NoConfiguration):
        print(f"pop3bridge: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"pop3bridge: invalid configuration:\n{exc}", file=sys.stderr)
    return EXIT_CONFIG


def run_with_settings(
    args: argparse.Namespace,
    main: Callable[[Any], Coroutine[Any, Any, int]],
    *,
    command: str,
    failures: tuple[type[BaseException], ...] = (),
    configure_logs: bool = True,
    check: Callable[[Any], int | None] | None = None,
) -> int:
    """Load the settings, then run `main(settings)` on a fresh event loop; its int is the exit.

    An invalid configuration exits 2 with the loader's message; `check(settings)` may refuse
    to start with its own exit status before logging is configured; an exception in `failures`
    exits 1 with `pop3bridge COMMAND: message` on stderr (the store or a listener is the usual
    cause, and the message says which); so does cancellation, which is how a second signal
    ends a long-running command (see `stop_on_signals`).
    """
    try:
        with starting():
            settings = load(args)
    except ConfigProblem as exc:
        return report_config_problem(exc)
    if check is not None and (refused := check(settings)) is not None:
        return refused
    if configure_logs:
        configure_logging(settings)
    try:
        return asyncio.run(main(settings))
    except failures as exc:
        from bridge.ops.logging import console

        console(
            f"pop3bridge {command}: {exc}",
            logger=f"bridge.commands.{command}",
            level=logging.ERROR,
            stream=sys.stderr,
        )
        return EXIT_FAILED
    except asyncio.CancelledError:
        return EXIT_FAILED


def stop_on_signals(logger: logging.Logger, *, what: str, second: str) -> asyncio.Event:
    """An event set by the first SIGTERM/SIGINT; a second one cancels the calling task.

    Long-running commands (`run`, `proxy`) wind down gracefully on the event; the second signal
    is the operator saying not to wait (`second` says what that means, for the log).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            logger.warning("second signal: %s", second)
            if main is not None:
                main.cancel()
            return
        logger.info("signal %s received: %s", signal.Signals(signum).name, what)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return stop


@contextlib.asynccontextmanager
async def serve_links(store: Any, settings: Any) -> AsyncIterator[None]:
    """The attachment link listener on `store` while the block runs, when
    `attachments.enabled` (`run`, and `proxy` for its tap's copies); else nothing."""
    from bridge.runtime import link_minter

    links = link_minter(settings)
    if links is None:
        yield
        return
    from bridge.attachments.server import LinkServer

    section = settings.attachments
    server = LinkServer(
        store,
        links.signer,
        str(section.bind),
        int(section.port),
        sweep_interval=float(section.sweep_interval),
    )
    async with server:
        yield

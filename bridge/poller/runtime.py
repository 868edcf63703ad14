"""What every poller subcommand shares: config loading, the store, the sender, the accounts.

`Runtime` is an async context manager that opens (and on exit closes, in reverse order) the
store and the pooled webhook sender (that part is `bridge.runtime.DeliveryRuntime`, which the
proxy's tap uses too) and adds the poller's accounts. Commands stay thin: they parse arguments,
enter a runtime and call one method of `PollerApp` or the store.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any

from bridge.poller.app import PollerApp, PollerOptions
from bridge.poller.build import account_spec, poller_options
from bridge.poller.oauth import TokenProvider
from bridge.poller.spec import AccountSpec
from bridge.runtime import DeliveryRuntime

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_OK",
    "ConfigProblem",
    "Runtime",
    "add_config_argument",
    "configure_logging",
    "load",
    "report_config_problem",
]

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


class ConfigProblem(Exception):
    """The configuration is invalid; the message says which key and why (exit code 2)."""


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get("POP3BRIDGE_CONFIG"),
        help="YAML configuration file (default: $POP3BRIDGE_CONFIG)",
    )


def load(args: argparse.Namespace) -> Any:
    """Validated settings, or `ConfigProblem` with the loader's key-by-key message."""
    from bridge.config import ConfigError, load_settings

    try:
        return load_settings(getattr(args, "config", None), os.environ)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None


def configure_logging(settings: Any) -> None:
    from bridge.ops.logging import configure_logging as configure

    section = getattr(settings, "logging", None)
    configure(getattr(section, "format", "json"), getattr(section, "level", "INFO"))


def report_config_problem(exc: ConfigProblem) -> int:
    print(f"pop3bridge: invalid configuration:\n{exc}", file=sys.stderr)
    return EXIT_CONFIG


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


class Runtime(DeliveryRuntime):
    """`DeliveryRuntime` plus the poller's account source and `PollerApp`, built from settings."""

    def __init__(self, settings: Any, *, with_sender: bool = True) -> None:
        super().__init__(settings, with_sender=with_sender)
        self._providers: dict[str, TokenProvider] = {}

    async def accounts(self) -> list[AccountSpec]:
        """Config-file accounts, plus database accounts when `poller.accounts_from_db`.

        A database account with the same name as a file account is ignored (the file wins,
        so a deploy can always override what was added at runtime), with a warning.
        """
        specs = {a.name: self._spec(a) for a in self.settings.accounts}
        if getattr(self.settings.poller, "accounts_from_db", False):
            for name, config in await self.store.list_accounts():
                if name in specs:
                    log.warning("database account %r ignored: the config file defines it", name)
                    continue
                try:
                    specs[name] = self._spec(validate_account({**config, "name": name}, self))
                except Exception as exc:
                    log.error("database account %r is invalid, skipped: %s", name, exc)
        return list(specs.values())

    def _spec(self, account: Any) -> AccountSpec:
        return account_spec(account, self.webhooks.get(account.webhook), self._providers)

    def app(self, **hooks: Any) -> PollerApp:
        options: PollerOptions = poller_options(
            self.settings.poller,
            shared_store=self.shared_store,
            webhook_timeouts=[float(w.timeout) for w in self.settings.webhooks],
        )
        return PollerApp(self.store, self.sender, self.routes, self.accounts, options, **hooks)


def validate_account(config: dict[str, Any], runtime: Runtime) -> Any:
    """A database account's JSON validated with the same model as a config-file account."""
    from bridge.config import validate_account as validate

    return validate(config, webhooks=list(runtime.webhooks))

"""`pop3bridge accounts add|list|remove`: accounts kept in the state database.

A provider can add a mailbox without a redeploy: the poller reads these when
`poller.accounts_from_db: true`, merged with the config file's accounts (the file wins on a name
clash). An account is validated with the same rules as a config-file account before it is
stored. Secrets should be stored as references (`password_file`, `password_env`), which are
resolved each time the account is loaded; `list` never prints a secret value.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import yaml

from bridge.commands._common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    add_config_argument,
    run_with_settings,
)
from bridge.poller.resources import PollerRuntime
from bridge.store.errors import StoreError

HELP = "add, list or remove accounts kept in the state database"

_SECRET_KEYS = ("password", "client_secret", "refresh_token", "secret", "token")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    sub = parser.add_subparsers(dest="accounts_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add or replace an account")
    add.add_argument("name")
    add.add_argument("--url", help="pop3s://user@host:995 or pop3://user@host:110")
    add.add_argument("--webhook", help="name of a configured webhook")
    add.add_argument("--password-file", help="file holding the password (read at each load)")
    add.add_argument("--password-env", help="environment variable holding the password")
    add.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other account key (value parsed as YAML), e.g. --set poll_interval=30",
    )
    sub.add_parser("list", help="print the accounts in the database (no secrets)")
    rm = sub.add_parser("remove", help="remove an account")
    rm.add_argument("name")


def _is_secret(key: str) -> bool:
    return any(key == s or key.endswith("_" + s) for s in _SECRET_KEYS)


def _keys(config: dict[str, Any]) -> list[str]:
    """Every key of a nested config, so a secret inside `oauth2:` is seen too."""
    out: list[str] = []
    for key, value in config.items():
        out.append(key)
        if isinstance(value, dict):
            out.extend(_keys(value))
    return out


def _redacted(config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out[key] = _redacted(value)
        elif _is_secret(key):
            out[key] = "***"
        else:
            out[key] = value
    return out


def _config_from(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key in ("url", "webhook", "password_file", "password_env"):
        value = getattr(args, key)
        if value is not None:
            config[key] = value
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        config[key.strip()] = yaml.safe_load(value)
    return config


async def _accounts(settings: Any, args: argparse.Namespace) -> int:
    async with PollerRuntime(settings, with_sender=False) as rt:
        if args.accounts_command == "list":
            accounts = await rt.store.list_accounts()
            for name, config in accounts:
                print(json.dumps({"name": name, **_redacted(config)}))
            if not accounts:
                # stdout stays empty (scripts read it as JSON lines); a person gets a word.
                print("no accounts in the database (add one with `accounts add`)", file=sys.stderr)
            return EXIT_OK
        if args.accounts_command == "remove":
            if await rt.store.remove_account(args.name):
                print(f"removed account {args.name!r}")
                return EXIT_OK
            print(f"no account named {args.name!r} in the database", file=sys.stderr)
            return EXIT_FAILED
        try:
            config = _config_from(args)
            rt.validate_account({**config, "name": args.name})
        except Exception as exc:
            print(f"accounts add {args.name}: invalid account: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        await rt.store.add_account(args.name, config, time.time())
        print(f"added account {args.name!r}")
        if any(_is_secret(k) and not k.endswith(("_file", "_env")) for k in _keys(config)):
            print(
                f"accounts add {args.name}: warning: a secret is stored in clear in the accounts "
                "table; prefer --password-file or --password-env (resolved on each replica)",
                file=sys.stderr,
            )
        return EXIT_OK


def run(args: argparse.Namespace) -> int:
    return run_with_settings(
        args,
        lambda settings: _accounts(settings, args),
        command="accounts",
        failures=(StoreError,),
        configure_logs=False,
    )

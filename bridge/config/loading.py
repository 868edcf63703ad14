"""`load_settings` and `validate_account`: validated settings, or every problem by key.

Validation runs with a context (`bridge.config.base`): the environment mapping ``*_env``
secrets are read from and the config file's directory, so a test can load a configuration
without touching ``os.environ`` and a relative ``password_file`` means the same file wherever
the process was started.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bridge.config.account import AccountConfig, no_webhook
from bridge.config.base import load_context
from bridge.config.errors import ConfigError, problems_of
from bridge.config.settings import Settings
from bridge.config.sources import CONFIG_ENV, SECRETS_DIR_ENV, configured_sources

__all__ = ["load_settings", "validate_account"]

M = TypeVar("M", bound=BaseModel)


def _raw_references(data: Any) -> list[tuple[str, str]]:
    """Webhook references checked on the raw data.

    Pydantic skips `Settings._references` when any field is invalid; this pass lets one run
    report a misspelt webhook name together with the other mistakes.
    """
    if not isinstance(data, dict):
        return []
    hooks = data.get("webhooks")
    accounts = data.get("accounts")
    if not isinstance(hooks, list) or not isinstance(accounts, list):
        return []
    names = {str(h["name"]) for h in hooks if isinstance(h, dict) and "name" in h}
    problems = []
    for i, account in enumerate(accounts):
        hook = account.get("webhook") if isinstance(account, dict) else None
        if isinstance(hook, str) and hook not in names:
            problems.append((f"accounts[{i}].webhook", no_webhook(hook, names)))
    return problems


def validate(model: type[M], data: Any, context: dict[str, Any]) -> M:
    """`model` validated from `data`, or `ConfigError` with every problem by key."""
    if isinstance(data, dict) and any(not isinstance(key, str) for key in data):
        # A `BaseSettings` is validated through its __init__, whose keywords must be strings;
        # a YAML `0:` at the top level is an unknown key like any other.
        data = {str(key): value for key, value in data.items()}
    try:
        with load_context(context):
            return model.model_validate(data, context=context)
    except ValidationError as exc:
        problems = problems_of(exc)
        if model is Settings:
            problems += [p for p in _raw_references(data) if p not in problems]
        raise ConfigError(problems) from None


def load_settings(
    path: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None = None,
    *,
    secrets_dir: str | os.PathLike[str] | None = None,
) -> Settings:
    """Settings from the YAML file at `path` (or ``$POP3BRIDGE_CONFIG``), the secrets directory
    (`secrets_dir` or ``$POP3BRIDGE_SECRETS_DIR``) and `env` overrides.

    `env` defaults to ``os.environ``; it is also where ``*_env`` secrets are looked up.
    ``*_file`` paths that are relative resolve against the config file's directory.
    Raises `ConfigError` listing every problem found.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if path is None:
        path = environ.get(CONFIG_ENV) or None
    if secrets_dir is None:
        secrets_dir = environ.get(SECRETS_DIR_ENV) or None
    source = configured_sources(Settings, path=path, env=environ, secrets_dir=secrets_dir)
    base_dir = Path(path).resolve().parent if path is not None else None
    return validate(Settings, source(), {"env": environ, "base_dir": base_dir})


def validate_account(
    config: Mapping[str, Any],
    *,
    webhooks: Iterable[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> AccountConfig:
    """One account (e.g. a database row) checked with the config-file rules.

    `webhooks` are the configured webhook names the account may refer to; None skips that check.
    """
    account = validate(AccountConfig, dict(config), {"env": os.environ if env is None else env})
    if webhooks is not None:
        names = set(webhooks)
        if account.webhook not in names:
            raise ConfigError([("webhook", no_webhook(account.webhook, names))])
    return account

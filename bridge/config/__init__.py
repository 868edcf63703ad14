"""The configuration: pydantic-settings models, their sources, key-by-key error reports.

One YAML file (``--config FILE`` or ``$POP3BRIDGE_CONFIG``) under files of a secrets directory
(``$POP3BRIDGE_SECRETS_DIR``) under environment variables named ``POP3BRIDGE_<KEY>__<KEY>...``;
list elements are addressed by index or by their ``name``
(``POP3BRIDGE_ACCOUNTS__support__POLL_INTERVAL=30``). `Settings` is a pydantic-settings
`BaseSettings`; `bridge.config.sources` says which of its sources we use as they are and what
pydantic-settings cannot do that we do ourselves (lists addressed by name, merged into the
file's lists rather than replacing them).

Secrets are ``SecretStr`` so a printed or logged model shows ``**********``. Each is declared
once (`SecretField`) and may be given as ``X``, ``X_file`` or ``X_env``; the files and variables
are read at load time, so a missing file is an error at start-up, not a login failure an hour
later (`bridge.config.secret_source`).

Error messages name the key path (``accounts[0].webhook``) and never quote the offending value:
a value in the wrong key may well be a password (`bridge.config.errors`).

Modules: `units` (sizes, durations, TLS spellings), `secret_source`, `errors`, `base` (the
section base classes), one module per group of sections (`webhook`, `account`, `service`,
`proxy`), `settings` (the root), `sources`, `loading`.
"""

from __future__ import annotations

from bridge.config.account import AccountConfig, AuthMethod, CanaryConfig, OAuth2Config
from bridge.config.attachments import AttachmentsConfig
from bridge.config.errors import ConfigError
from bridge.config.loading import load_settings, validate, validate_account
from bridge.config.proxy import (
    POP3_VERBS,
    ProxyConfig,
    ProxyListener,
    ProxyPolicy,
    ProxyRoute,
    ProxyTap,
    ProxyUpstream,
)
from bridge.config.secret_source import SecretField, SecretSource
from bridge.config.service import (
    LoggingConfig,
    OpsConfig,
    PollerConfig,
    RetentionConfig,
    StateConfig,
)
from bridge.config.settings import Settings
from bridge.config.sources import CONFIG_ENV, ENV_PREFIX, SECRETS_DIR_ENV
from bridge.config.units import Duration, Size, parse_duration, parse_size
from bridge.config.webhook import MailgunFormat, SendGridFormat, WebhookConfig

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "POP3_VERBS",
    "SECRETS_DIR_ENV",
    "AccountConfig",
    "AttachmentsConfig",
    "AuthMethod",
    "CanaryConfig",
    "ConfigError",
    "Duration",
    "LoggingConfig",
    "MailgunFormat",
    "OAuth2Config",
    "OpsConfig",
    "PollerConfig",
    "ProxyConfig",
    "ProxyListener",
    "ProxyPolicy",
    "ProxyRoute",
    "ProxyTap",
    "ProxyUpstream",
    "RetentionConfig",
    "SecretField",
    "SecretSource",
    "SendGridFormat",
    "Settings",
    "Size",
    "StateConfig",
    "WebhookConfig",
    "load_settings",
    "parse_duration",
    "parse_size",
    "validate",
    "validate_account",
]

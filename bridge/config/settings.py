"""`Settings`: the whole configuration, a pydantic-settings `BaseSettings`.

Its only source is what it is given. pydantic-core validates a `BaseSettings` through its
``__init__``, ``Settings.model_validate(d)`` included, so a source named in
`settings_customise_sources` would read ``os.environ`` and ``$POP3BRIDGE_CONFIG`` into every
validation of a plain dict (tests, the Helm chart checks, `bridge.config.validate`).
`bridge.config.load_settings` reads the sources instead, with the environment it is given
(`bridge.config.sources`: pydantic-settings' YAML and secrets-directory sources under our
list-by-name overlay), and validates the result here.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.config.account import AccountConfig, no_webhook
from bridge.config.attachments import AttachmentsConfig
from bridge.config.errors import KeyedProblem, duplicates
from bridge.config.proxy import BuiltWhenGiven, ProxyConfig, absent_proxy
from bridge.config.service import (
    LoggingConfig,
    OpsConfig,
    PollerConfig,
    RetentionConfig,
    StateConfig,
)
from bridge.config.webhook import WebhookConfig

__all__ = ["Settings"]


class Settings(BaseSettings):
    """The whole configuration file. Build from a dict with `Settings.model_validate(d)`."""

    # Keys are matched as written (a YAML `Accounts:` is an unknown key, as it always was).
    model_config = SettingsConfigDict(extra="forbid", validate_default=True, case_sensitive=True)

    state: StateConfig = Field(default_factory=lambda: StateConfig(), description="Durable state.")
    webhooks: list[WebhookConfig] = Field(
        default_factory=list, description="Where messages are delivered."
    )
    accounts: list[AccountConfig] = Field(
        default_factory=list, description="POP3 mailboxes the poller reads."
    )
    poller: PollerConfig = Field(
        default_factory=lambda: PollerConfig(), description="Poller tuning."
    )
    # Built only when given (bridge.config.proxy's docstring); the reference shows the model.
    proxy: Annotated[ProxyConfig, BuiltWhenGiven()] = Field(
        default_factory=absent_proxy, description="The POP3 proxy."
    )
    ops: OpsConfig = Field(
        default_factory=lambda: OpsConfig(), description="Health/metrics endpoint."
    )
    attachments: AttachmentsConfig = Field(
        default_factory=lambda: AttachmentsConfig(),
        description="Big attachments by signed link, served by `pop3bridge run`.",
    )
    logging: LoggingConfig = Field(
        default_factory=lambda: LoggingConfig(), description="Log output."
    )
    retention: RetentionConfig = Field(
        default_factory=lambda: RetentionConfig(), description="How long history is kept."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # See the module docstring: the file, secrets and environment are read by the loader.
        return (init_settings,)

    @model_validator(mode="after")
    def _references(self) -> Self:
        problems = duplicates("webhooks", (w.name for w in self.webhooks))
        problems += duplicates("accounts", (a.name for a in self.accounts))
        hooks = {w.name for w in self.webhooks}
        for i, account in enumerate(self.accounts):
            if account.webhook not in hooks:
                problems.append((f"accounts[{i}].webhook", no_webhook(account.webhook, hooks)))
        for i, route in enumerate(self.proxy.routes or []):
            if route.tap is not None and route.tap.webhook not in hooks:
                problems.append(
                    (f"proxy.routes[{i}].tap.webhook", no_webhook(route.tap.webhook, hooks))
                )
        if problems:
            raise KeyedProblem(problems)
        return self

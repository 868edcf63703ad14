"""`attachments:`: big attachments by signed, expiring link, served by `pop3bridge run`
(README "Big attachments", bridge/attachments/)."""

from __future__ import annotations

from typing import Annotated, Any, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.config.base import SecretSection
from bridge.config.errors import KeyedProblem
from bridge.config.secret_source import SecretField
from bridge.config.units import Duration
from bridge.config.webhook import http_url

__all__ = ["AttachmentsConfig"]

MIN_KEY_BYTES = 32


def _enabled(data: Any) -> bool:
    return bool(data.get("enabled", False))


class AttachmentsConfig(SecretSection):
    enabled: bool = Field(
        default=False,
        description="Give attachments over a webhook's `attachment_inline_limit` (and a raw "
        "message over it, with `include_raw`) a signed `url` instead of no content, and serve "
        "them. Needs `public_url` and a signing key.",
    )
    bind: str = Field(
        default="127.0.0.1",
        description="Listener bind address (the container image uses 0.0.0.0).",
    )
    port: int = Field(default=8025, ge=0, le=65535, description="Listener port (0: any free port).")
    public_url: str | None = Field(
        default=None,
        description="Base URL receivers reach the listener at (e.g. through a TLS-terminating "
        "ingress), such as `https://files.example.com/pop3bridge`; links are "
        "`<public_url>/a/<message id>/<attachment index>?expires=...&signature=...`.",
    )
    signing_key: Annotated[
        SecretStr | list[SecretStr] | None, SecretField(required=_enabled, many=True)
    ] = Field(
        default=None,
        description="HMAC key for link signatures, at least 32 bytes (random). A list verifies "
        "with every key and signs with the first, for rotation. Required when enabled.",
    )
    url_ttl: Duration = Field(
        default=7 * 86400.0, gt=0, description="How long a link stays valid after it is minted."
    )
    sweep_interval: Duration = Field(
        default=300.0, gt=0, description="How often expired link content is purged from the store."
    )

    @field_validator("public_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = http_url(value, "expected an http:// or https:// URL with a host")
        parts = urlsplit(value)
        if parts.query or parts.fragment or '"' in value or "\\" in value:
            raise ValueError("expected a base URL without query, fragment, quotes or backslashes")
        return value.rstrip("/")

    @field_validator("signing_key")
    @classmethod
    def _key_length(cls, value: SecretStr | list[SecretStr] | None) -> Any:
        items = value if isinstance(value, list) else [value] if value is not None else []
        if isinstance(value, list) and not value:
            raise ValueError("the rotation list is empty")
        for item in items:
            if len(item.get_secret_value().encode()) < MIN_KEY_BYTES:
                raise ValueError(
                    f"a signing key must be at least {MIN_KEY_BYTES} bytes (use a random string)"
                )
        return value

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.enabled and self.public_url is None:
            raise KeyedProblem([("public_url", "required when attachments are enabled")])
        return self

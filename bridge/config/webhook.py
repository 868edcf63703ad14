"""`webhooks[]`: where messages are delivered, and how they are signed and retried."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.config.base import SecretSection, Section
from bridge.config.errors import KeyedProblem
from bridge.config.files import ConfigPath
from bridge.config.secret_source import SecretField
from bridge.config.units import Duration, Size

__all__ = ["MailgunFormat", "SendGridFormat", "WebhookConfig", "http_url"]


def http_url(value: str, message: str) -> str:
    """`value` when it is an http(s) URL with a host, else `ValueError(message)`."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(message)
    return value


def _check_signing_secret(value: SecretStr) -> None:
    from bridge.delivery.signing import InvalidSecret, decode_secret

    try:
        decode_secret(value.get_secret_value())
    except InvalidSecret as exc:
        raise ValueError(str(exc)) from None


class MailgunFormat(Section):
    mime: bool = Field(
        default=False,
        description="Post the whole message as `body-mime` (Mailgun's raw MIME form, for "
        "receivers on a `.../inbound_mime/` URL) instead of the parsed fields.",
    )


class SendGridFormat(Section):
    raw: bool = Field(
        default=False,
        description='Post the whole message in `email` (Inbound Parse\'s "raw" setting) '
        "instead of the parsed fields.",
    )


def _standard(data: Mapping[str, Any]) -> bool:
    # A receiver written for another service has no Standard Webhooks secret to check.
    return bool(data.get("format", "standard") == "standard")


def _mailgun(data: Mapping[str, Any]) -> bool:
    return bool(data.get("format") == "mailgun")


class WebhookConfig(SecretSection):
    name: str = Field(description="Referenced by `accounts[].webhook` and `proxy` taps.")
    format: Literal["standard", "postmark", "mailgun", "sendgrid"] = Field(
        default="standard",
        description="Request shape: `standard` (the signed JSON payload) or the inbound "
        "request of `postmark`, `mailgun` or `sendgrid`, for receivers written for those "
        "services (docs/formats.md). Credentials in the URL (`https://user:pass@host/...`) "
        "go out as HTTP Basic auth.",
    )
    mailgun: MailgunFormat = Field(
        default_factory=MailgunFormat, description="Options of `format: mailgun`."
    )
    sendgrid: SendGridFormat = Field(
        default_factory=SendGridFormat, description="Options of `format: sendgrid`."
    )
    mailgun_signing_key: Annotated[SecretStr | None, SecretField(required=_mailgun)] = Field(
        default=None,
        description="`format: mailgun`: the webhook signing key `signature` is an HMAC-SHA256 "
        "under (the receiver's MAILGUN_WEBHOOK_SIGNING_KEY). Required with that format.",
    )
    url: str = Field(description="http(s) URL the signed POST goes to.")
    secret: Annotated[
        SecretStr | list[SecretStr] | None, SecretField(required=_standard, many=True)
    ] = Field(
        default=None,
        description="Standard Webhooks signing secret (`whsec_<base64>`). A list signs with "
        "every secret, for rotation. One of `secret`, `secret_file`, `secret_env` is "
        "required.",
    )
    timeout: Duration = Field(default=10.0, description="Seconds for one HTTP attempt.")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Extra request headers (values are treated as secrets, e.g. Authorization).",
    )
    max_attempts: int = Field(
        default=30, ge=1, description="Attempts before a delivery is dead-lettered."
    )
    retry_max_delay: Duration = Field(
        default=3600.0,
        gt=0,
        description="Upper bound of the exponential back-off between attempts.",
    )
    attachment_inline_limit: Size = Field(
        default=1024 * 1024,
        description="Attachments up to this size are inlined (base64) in the payload; larger "
        "ones are described without content.",
    )
    include_raw: bool = Field(default=False, description="Add the whole RFC 5322 message (base64).")
    ca_file: ConfigPath | None = Field(
        default=None, description="CA bundle to trust instead of the system store."
    )

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        return http_url(value, "expected an http:// or https:// URL with a host")

    @model_validator(mode="after")
    def _one_authorization(self) -> Self:
        # aiohttp turns URL userinfo into an Authorization header and refuses a request that
        # has both, so every delivery would fail: refuse the combination here instead.
        if urlsplit(self.url).username is not None and any(
            key.lower() == "authorization" for key in self.headers
        ):
            raise KeyedProblem(
                [
                    (
                        "headers",
                        "an Authorization header cannot be combined with credentials in the "
                        "URL (user:password@); keep only one of them",
                    )
                ]
            )
        return self

    @field_validator("secret")
    @classmethod
    def _format(cls, value: SecretStr | list[SecretStr] | None) -> Any:
        items = value if isinstance(value, list) else [value] if value is not None else []
        if isinstance(value, list) and not value:
            raise ValueError("the rotation list is empty")
        for item in items:
            _check_signing_secret(item)
        return value

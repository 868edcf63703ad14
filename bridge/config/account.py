"""`accounts[]`: the POP3 mailboxes the poller reads, and their OAuth2 logins."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal, Self
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.config.base import SecretSection, Section
from bridge.config.errors import KeyedProblem
from bridge.config.files import ConfigPath
from bridge.config.secret_source import SecretField
from bridge.config.units import Duration, Size, TLSSetting, bool_tls
from bridge.config.webhook import http_url

__all__ = ["AccountConfig", "AuthMethod", "CanaryConfig", "OAuth2Config", "no_webhook"]


class OAuth2Config(SecretSection):
    token_url: str = Field(description="OAuth2 token endpoint (refresh_token grant).")
    client_id: str = Field(description="OAuth2 client id.")
    client_secret: Annotated[SecretStr | None, SecretField()] = Field(
        default=None, description="OAuth2 client secret, if any."
    )
    refresh_token: Annotated[SecretStr | None, SecretField(required=True)] = Field(
        default=None, description="Long-lived refresh token; one of the three forms is required."
    )
    scope: str | None = Field(
        default=None, description="Scope to request, e.g. `https://mail.google.com/`."
    )
    warn_before: Duration = Field(
        default=2 * 86400.0,
        gt=0,
        description="Warn (log, `/status`) this long before the refresh token expires, when the "
        "provider announces its expiry (`refresh_token_expires_in`).",
    )

    @field_validator("token_url")
    @classmethod
    def _http(cls, value: str) -> str:
        return http_url(value, "expected an http:// or https:// URL")


class CanaryConfig(Section):
    smtp: str = Field(
        description="Where to submit the canary: `smtp://host:port` or `lmtp://host:port` (a "
        "server that delivers into this account's mailbox)."
    )
    every: Duration = Field(default=900.0, gt=0, description="Seconds between canaries.")
    max_age: Duration = Field(
        default=300.0,
        gt=0,
        description="A canary not fetched this long after submission makes the account "
        "'canary stale'.",
    )
    to: str | None = Field(
        default=None, description="Recipient address; default: the account's username."
    )
    sender: str = Field(
        default="pop3bridge-canary@localhost", description="Envelope and From address."
    )

    @field_validator("smtp")
    @classmethod
    def _scheme(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"not a valid URL: {_port_problem(exc)}") from None
        if parts.scheme.lower() not in ("smtp", "lmtp") or not parts.hostname:
            raise ValueError("expected smtp://host[:port] or lmtp://host[:port]")
        return value


def _port_problem(exc: ValueError) -> str:
    """urllib's reason in words: "Port out of range 0-65535" for 99999, not a guess."""
    text = str(exc)
    if "out of range" in text.lower():
        return "the port must be between 0 and 65535"
    if "cast to integer" in text.lower() or "port" in text.lower():
        return "the port is not a number"
    return text


AuthMethod = Literal["auto", "user", "apop", "plain", "login", "cram-md5", "xoauth2", "oauthbearer"]
_OAUTH_METHODS = ("xoauth2", "oauthbearer")
_PASSWORD_KEYS = ("password", "password_file", "password_env")


def _account_url(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Fill host/port/tls/username (and a URL password) from ``url``.

    Explicit keys win only when they agree: a URL saying port 995 next to ``port: 110`` is a
    mistake worth stopping for, not a precedence rule to learn.
    """
    url = data.get("url")
    if url is None:
        return []
    if not isinstance(url, str):
        return [("url", "expected a pop3:// or pop3s:// URL")]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return [("url", f"not a valid URL: {_port_problem(exc)}")]
    scheme = parts.scheme.lower()
    if scheme not in ("pop3", "pop3s") or not parts.hostname:
        return [("url", "expected pop3://[user@]host[:port] or pop3s://[user@]host[:port]")]
    derived: dict[str, Any] = {"host": parts.hostname}
    if port is not None:
        derived["port"] = port
    if parts.username:
        derived["username"] = unquote(parts.username)
    if scheme == "pop3s":
        derived["tls"] = "implicit"
    elif data.get("starttls") is True or data.get("tls") == "starttls":
        derived["tls"] = "starttls"
    else:
        derived["tls"] = "none"
    problems: list[tuple[str, str]] = []
    for key, value in derived.items():
        given = data.get(key)
        if given is None:
            data[key] = value
        elif str(bool_tls(given)) != str(value):
            problems.append((key, "disagrees with url; give it in one place only"))
    if parts.password is not None:
        if any(data.get(k) is not None for k in _PASSWORD_KEYS):
            problems.append(("url", "has a password and another password source is set"))
        else:
            data["password"] = unquote(parts.password)
    # Keep the URL only in its password-free form so it can be printed.
    netloc = parts.hostname + (f":{port}" if port is not None else "")
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    data["url"] = f"{scheme}://{netloc}"
    return problems


class AccountConfig(SecretSection):
    name: str = Field(description="Unique account name; appears in payloads, metrics and logs.")
    url: str | None = Field(
        default=None,
        description="`pop3s://user%40domain@host:995` (implicit TLS) or `pop3://user@host` (no "
        "TLS unless `tls: starttls`); fills host, port, tls and username.",
    )
    host: str = Field(description="POP3 server host name.")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Default 995 for implicit TLS, 110 otherwise."
    )
    tls: TLSSetting = Field(
        default="implicit", description="`implicit` (POP3S), `starttls` (STLS on 110) or `none`."
    )
    starttls: bool | None = Field(
        default=None, description="`true` is the same as `tls: starttls`."
    )
    username: str = Field(description="Login name.")
    password: Annotated[SecretStr | None, SecretField()] = Field(
        default=None, description="Password (prefer the _file form)."
    )
    oauth2: OAuth2Config | None = Field(
        default=None, description="OAuth2 refresh-token settings for XOAUTH2/OAUTHBEARER logins."
    )
    auth: AuthMethod = Field(
        default="auto",
        description="Login mechanism; `auto` picks the best the server offers (an OAuth2 "
        "mechanism when `oauth2` is set; PLAIN first on verified TLS, CRAM-MD5 first otherwise: "
        "docs/pop3.md) and, when it is refused, the next one the server offers and the account "
        "allows (plaintext only with TLS or `allow_plaintext`).",
    )
    ca_file: ConfigPath | None = Field(
        default=None, description="CA bundle for the server's certificate."
    )
    insecure: bool = Field(default=False, description="Skip certificate verification (tests only).")
    tls_resume: bool = Field(
        default=True,
        description="Resume the last TLS session with this server (same host, port and name) "
        "instead of a full handshake; the certificate is verified again at least hourly. "
        "`false`: a full handshake every connection.",
    )
    allow_plaintext: bool = Field(
        default=False, description="Allow sending credentials over a link without TLS."
    )
    pipelining: bool = Field(default=True, description="Pipeline RETRs when the server allows it.")
    connect_timeout: Duration = Field(default=30.0, gt=0, description="TCP+TLS connect timeout.")
    read_timeout: Duration = Field(
        default=120.0, gt=0, description="Timeout for one server response."
    )
    webhook: str = Field(description="Name of the webhook this account delivers to.")
    mailbox_hash_separator: str = Field(
        default="+",
        min_length=1,
        max_length=8,
        description="What starts the mailbox hash in a recipient's local part "
        "(`support+1234@...` gives `1234`), for the payload's `mailbox_hash` fields.",
    )
    trusted_authserv_id: str | list[str] | None = Field(
        default=None,
        description="Authentication-Results authserv-id(s) of this mailbox's own provider "
        "(e.g. `mx.google.com`); only its results, at the top of the header block, fill the "
        "payload's `auth`. Unset: `auth` is null.",
    )
    trust_spam_headers: bool = Field(
        default=False,
        description="The provider's X-Spam-Status/-Score/-Flag headers (at the top of the "
        "header block) fill the payload's `spam`. Off: `spam` is null.",
    )
    poll_interval: Duration = Field(default=60.0, gt=0, description="Seconds between polls.")
    on_delivered: Literal["keep", "delete"] = Field(
        default="keep", description="`delete` removes a message from the server only after a 2xx."
    )
    initial: Literal["all", "new"] = Field(
        default="all",
        description="On first sight of the mailbox: deliver what is there (`all`) or only mail "
        "arriving later (`new`).",
    )
    max_message_size: Size = Field(
        default=50 * 1024 * 1024,
        description="Larger messages are delivered as metadata only (headers), never dropped.",
    )
    enabled: bool = Field(
        default=True, description="`false` keeps the account configured but unpolled."
    )
    canary: CanaryConfig | None = Field(
        default=None,
        description="Freshness canary: a small message submitted to this mailbox every `every` "
        "and timed until it is fetched (never delivered to the webhook, always deleted).",
    )

    @classmethod
    def prepare(cls, data: dict[str, Any]) -> list[tuple[str, str]]:
        problems = _account_url(data)
        if data.get("starttls") is True and data.get("tls") is None:
            data["tls"] = "starttls"
        return problems

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[tuple[str, str]] = []
        if self.starttls is True and self.tls != "starttls":
            problems.append(("starttls", f"conflicts with tls: {self.tls}"))
        if self.port is None:
            self.port = 995 if self.tls == "implicit" else 110
        if self.auth in _OAUTH_METHODS and self.oauth2 is None:
            problems.append(("oauth2", f"required when auth is {self.auth}"))
        if self.oauth2 is None and self.password is None:
            problems.append(
                ("password", "required: give password, password_file, password_env or oauth2")
            )
        if self.oauth2 is not None and self.auth not in (*_OAUTH_METHODS, "auto"):
            problems.append(("auth", "must be auto, xoauth2 or oauthbearer with oauth2"))
        if problems:
            raise KeyedProblem(problems)
        return self


def no_webhook(name: str, hooks: Iterable[str]) -> str:
    """The message for a reference to a webhook that is not configured."""
    known = ", ".join(repr(h) for h in sorted(hooks)) or "none are configured"
    return f"no webhook named {name!r} (known: {known})"

"""The configuration: pydantic models, YAML + environment loading, key-by-key error reports.

One YAML file (``--config FILE`` or ``$POP3BRIDGE_CONFIG``) is overlaid with environment
variables named ``POP3BRIDGE_<KEY>__<KEY>...``. List elements are addressed by index or by their
``name`` (``POP3BRIDGE_ACCOUNTS__support__POLL_INTERVAL=30``), which is why the overlay is done
here on plain data instead of by pydantic-settings' env source: that source cannot reach into
lists, and reading a passed-in mapping instead of ``os.environ`` keeps tests hermetic.

Secrets are ``SecretStr`` so a printed or logged model shows ``**********``. Their ``*_file``
(Kubernetes secret mounts) and ``*_env`` variants are resolved at load time, so a missing file is
a configuration error at start-up, not a login failure an hour later.

Error messages name the key path (``accounts[0].webhook``) and never quote the offending value:
a value in the wrong key may well be a password.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "ENV_PREFIX",
    "AccountConfig",
    "CanaryConfig",
    "ConfigError",
    "Duration",
    "LoggingConfig",
    "OAuth2Config",
    "OpsConfig",
    "PollerConfig",
    "ProxyConfig",
    "ProxyListener",
    "ProxyPolicy",
    "ProxyRoute",
    "ProxyUpstream",
    "Settings",
    "Size",
    "StateConfig",
    "WebhookConfig",
    "load_settings",
    "parse_duration",
    "parse_size",
    "validate_account",
]

ENV_PREFIX = "POP3BRIDGE_"
CONFIG_ENV = "POP3BRIDGE_CONFIG"


class ConfigError(Exception):
    """The configuration cannot be used. `problems` holds (key path, what is wrong) pairs."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        lines = [f"{key}: {msg}" if key else msg for key, msg in self.problems]
        super().__init__("\n".join(lines))


class _KeyedProblem(ValueError):
    """Raised inside validators to attach problems to sub-keys of the model being validated.

    Pydantic only knows the location of the model; the formatter below appends these keys so
    the user reads ``accounts[0].password_file`` instead of ``accounts[0]``.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{k}: {m}" if k else m for k, m in self.problems))


# --------------------------------------------------------------------------- sizes, durations

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    """Bytes from an int or a string like ``"50MB"`` (10^6) / ``"1MiB"`` (2^20)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1048576, '50MB' or '1MiB', not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    raise ValueError(
        "expected a size in bytes or with a unit: B, KB, MB, GB (powers of 1000) "
        "or KiB, MiB, GiB (powers of 1024), e.g. '50MB'"
    )


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``"10s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10, '10s' or '5m', not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for m in _DURATION_PART.finditer(text):
                if m.start() != pos:
                    break
                seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
                pos = m.end()
            if pos != len(text) or not text:
                raise ValueError(
                    "expected seconds or a duration with units ms, s, m, h, d, e.g. '30s' or '5m'"
                ) from None
    else:
        raise ValueError("expected a duration such as 10, '10s' or '5m'")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be a finite number of seconds, zero or more")
    return seconds


class _Kind:
    """Marks an annotated type with the name the generated reference shows for it."""

    def __init__(self, name: str) -> None:
        self.name = name


Size = Annotated[int, BeforeValidator(parse_size), _Kind("size")]
Duration = Annotated[float, BeforeValidator(parse_duration), _Kind("duration")]


def _bool_tls(value: object) -> object:
    # The Helm chart examples say `tls: true`; accept it as the obvious spelling of implicit TLS.
    if value is True:
        return "implicit"
    if value is False:
        return "none"
    return value


TLSMode = Annotated[Literal["implicit", "starttls", "none"], BeforeValidator(_bool_tls)]
ListenerTLS = Annotated[Literal["implicit", "none"], BeforeValidator(_bool_tls)]


class _Model(BaseModel):
    # Unknown keys are errors: a misspelt `pasword_file` must not silently mean "no password".
    model_config = ConfigDict(extra="forbid", validate_default=True)


# --------------------------------------------------------------------------- secret sources


def _env_from(info: ValidationInfo) -> Mapping[str, str]:
    ctx = info.context if isinstance(info.context, dict) else {}
    env = ctx.get("env")
    return env if env is not None else os.environ


def _base_dir(info: ValidationInfo) -> Path | None:
    ctx = info.context if isinstance(info.context, dict) else {}
    base = ctx.get("base_dir")
    return Path(base) if base is not None else None


def _read_secret_file(name: str, base: Path | None) -> str:
    path = Path(name).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{str(path)!r} is a directory, expected a file") from None
    except PermissionError:
        raise ValueError(f"file {str(path)!r} is not readable by this process") from None
    except UnicodeDecodeError:
        raise ValueError(f"file {str(path)!r} is not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"file {str(path)!r} cannot be read ({exc.strerror})") from None
    # Exactly one trailing newline goes: `echo secret > file` adds it, but a secret may
    # legitimately end in other whitespace.
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    return text


def _resolve_secret(
    data: dict[str, Any],
    key: str,
    info: ValidationInfo,
    *,
    many: bool = False,
    required: bool = False,
) -> list[tuple[str, str]]:
    """Fold ``key_file`` / ``key_env`` into ``key``; returns problems instead of raising.

    The ``*_file``/``*_env`` keys stay in the data (they are model fields) so a summary can say
    where a secret came from. `required`: giving none of the three forms is a problem too.
    """
    sources = [k for k in (key, f"{key}_file", f"{key}_env") if data.get(k) is not None]
    if len(sources) > 1:
        return [(key, f"give only one of {', '.join(sources)}")]
    if not sources:
        return [(key, f"required: give {key}, {key}_file or {key}_env")] if required else []
    if sources[0] == key:
        return []
    source = sources[0]
    raw = data[source]
    names = raw if isinstance(raw, list) and many else [raw]
    values: list[str] = []
    problems: list[tuple[str, str]] = []
    for i, name in enumerate(names):
        where = f"{source}[{i}]" if names is raw else source
        if not isinstance(name, str) or not name:
            problems.append(
                (
                    where,
                    "expected a file path"
                    if source.endswith("_file")
                    else "expected an environment variable name",
                )
            )
            continue
        if source.endswith("_file"):
            try:
                values.append(_read_secret_file(name, _base_dir(info)))
            except ValueError as exc:
                problems.append((where, str(exc)))
                continue
        else:
            env = _env_from(info)
            if name not in env:
                problems.append((where, f"environment variable {name!r} is not set"))
                continue
            values.append(env[name])
        if values and values[-1] == "":
            problems.append((where, "the secret is empty"))
    if not problems:
        data[key] = values if names is raw else values[0]
    return problems


def _http_url(value: str, message: str) -> str:
    """`value` when it is an http(s) URL with a host, else `ValueError(message)`."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(message)
    return value


# --------------------------------------------------------------------------- sections


class StateConfig(_Model):
    url: str = Field(
        default="sqlite:///var/lib/pop3bridge/state.db",
        description="Where seen UIDLs, the outbox and dead letters live: `sqlite:///abs/path.db`, "
        "`sqlite:///:memory:` (tests) or `postgresql://user@host/db` (needed for several "
        "replicas; put the password in `PGPASSWORD`, not in the URL).",
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        scheme = value.split(":", 1)[0].lower() if ":" in value else ""
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("expected a URL starting with sqlite:/// or postgresql://")
        return value


def _check_secret_format(value: SecretStr) -> None:
    from bridge.delivery.signing import InvalidSecret, decode_secret

    try:
        decode_secret(value.get_secret_value())
    except InvalidSecret as exc:
        raise ValueError(str(exc)) from None


class MailgunFormat(_Model):
    mime: bool = Field(
        default=False,
        description="Post the whole message as `body-mime` (Mailgun's raw MIME form, for "
        "receivers on a `.../inbound_mime/` URL) instead of the parsed fields.",
    )


class SendGridFormat(_Model):
    raw: bool = Field(
        default=False,
        description='Post the whole message in `email` (Inbound Parse\'s "raw" setting) '
        "instead of the parsed fields.",
    )


class WebhookConfig(_Model):
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
    mailgun_signing_key: SecretStr | None = Field(
        default=None,
        description="`format: mailgun`: the webhook signing key `signature` is an HMAC-SHA256 "
        "under (the receiver's MAILGUN_WEBHOOK_SIGNING_KEY). Required with that format.",
    )
    mailgun_signing_key_file: str | None = Field(
        default=None, description="File holding the Mailgun signing key."
    )
    mailgun_signing_key_env: str | None = Field(
        default=None, description="Environment variable holding the Mailgun signing key."
    )
    url: str = Field(description="http(s) URL the signed POST goes to.")
    secret: SecretStr | list[SecretStr] | None = Field(
        default=None,
        description="Standard Webhooks signing secret (`whsec_<base64>`). A list signs with "
        "every secret, for rotation. One of `secret`, `secret_file`, `secret_env` is required.",
    )
    secret_file: str | list[str] | None = Field(
        default=None, description="File(s) holding the secret (one trailing newline is stripped)."
    )
    secret_env: str | None = Field(
        default=None, description="Environment variable holding the secret."
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
    ca_file: str | None = Field(
        default=None, description="CA bundle to trust instead of the system store."
    )

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        # A receiver written for another service has no Standard Webhooks secret to check.
        standard = data.get("format", "standard") == "standard"
        problems = _resolve_secret(data, "secret", info, many=True, required=standard)
        problems += _resolve_secret(
            data, "mailgun_signing_key", info, required=data.get("format") == "mailgun"
        )
        if problems:
            raise _KeyedProblem(problems)
        return data

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        return _http_url(value, "expected an http:// or https:// URL with a host")

    @model_validator(mode="after")
    def _one_authorization(self) -> WebhookConfig:
        # aiohttp turns URL userinfo into an Authorization header and refuses a request that
        # has both, so every delivery would fail: refuse the combination here instead.
        if urlsplit(self.url).username is not None and any(
            key.lower() == "authorization" for key in self.headers
        ):
            raise _KeyedProblem(
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
            _check_secret_format(item)
        return value


class OAuth2Config(_Model):
    token_url: str = Field(description="OAuth2 token endpoint (refresh_token grant).")
    client_id: str = Field(description="OAuth2 client id.")
    client_secret: SecretStr | None = Field(
        default=None, description="OAuth2 client secret, if any."
    )
    client_secret_file: str | None = Field(
        default=None, description="File holding the client secret."
    )
    client_secret_env: str | None = Field(default=None, description="Env variable holding it.")
    refresh_token: SecretStr | None = Field(
        default=None, description="Long-lived refresh token; one of the three forms is required."
    )
    refresh_token_file: str | None = Field(
        default=None, description="File holding the refresh token."
    )
    refresh_token_env: str | None = Field(default=None, description="Env variable holding it.")
    scope: str | None = Field(
        default=None, description="Scope to request, e.g. `https://mail.google.com/`."
    )
    warn_before: Duration = Field(
        default=2 * 86400.0,
        gt=0,
        description="Warn (log, `/status`) this long before the refresh token expires, when the "
        "provider announces its expiry (`refresh_token_expires_in`).",
    )

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        problems = _resolve_secret(data, "client_secret", info)
        problems += _resolve_secret(data, "refresh_token", info, required=True)
        if problems:
            raise _KeyedProblem(problems)
        return data

    @field_validator("token_url")
    @classmethod
    def _http(cls, value: str) -> str:
        return _http_url(value, "expected an http:// or https:// URL")


class CanaryConfig(_Model):
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
        elif str(_bool_tls(given)) != str(value):
            problems.append((key, "disagrees with url; give it in one place only"))
    if parts.password is not None:
        if any(data.get(k) is not None for k in ("password", "password_file", "password_env")):
            problems.append(("url", "has a password and another password source is set"))
        else:
            data["password"] = unquote(parts.password)
    # Keep the URL only in its password-free form so it can be printed.
    netloc = parts.hostname + (f":{port}" if port is not None else "")
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    data["url"] = f"{scheme}://{netloc}"
    return problems


class AccountConfig(_Model):
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
    tls: TLSMode = Field(
        default="implicit", description="`implicit` (POP3S), `starttls` (STLS on 110) or `none`."
    )
    starttls: bool | None = Field(
        default=None, description="`true` is the same as `tls: starttls`."
    )
    username: str = Field(description="Login name.")
    password: SecretStr | None = Field(
        default=None, description="Password (prefer the _file form)."
    )
    password_file: str | None = Field(default=None, description="File holding the password.")
    password_env: str | None = Field(default=None, description="Environment variable holding it.")
    oauth2: OAuth2Config | None = Field(
        default=None, description="OAuth2 refresh-token settings for XOAUTH2/OAUTHBEARER logins."
    )
    auth: AuthMethod = Field(
        default="auto",
        description="Login mechanism; `auto` picks the strongest the server offers "
        "(an OAuth2 mechanism when `oauth2` is set).",
    )
    ca_file: str | None = Field(default=None, description="CA bundle for the server's certificate.")
    insecure: bool = Field(default=False, description="Skip certificate verification (tests only).")
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

    @model_validator(mode="before")
    @classmethod
    def _sources(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        problems = _account_url(data)
        if data.get("starttls") is True and data.get("tls") is None:
            data["tls"] = "starttls"
        problems += _resolve_secret(data, "password", info)
        if problems:
            raise _KeyedProblem(problems)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> AccountConfig:
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
            raise _KeyedProblem(problems)
        return self


class PollerConfig(_Model):
    max_concurrent_accounts: int = Field(default=10, ge=1, description="Accounts polled at once.")
    jitter: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Random spread of each poll, as a fraction of the interval.",
    )
    shutdown_grace: Duration = Field(
        default=10.0, description="On SIGTERM, seconds to finish polls and deliveries in flight."
    )
    delivery_concurrency: int = Field(default=16, ge=1, description="Webhook requests in flight.")
    parse_workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Processes that parse MIME into webhook bodies beside the main one; 0 parses "
        "in the main process. 1 roughly halves the main process's CPU per message on a machine "
        "with a core to spare (see BENCHMARKS.md).",
    )
    replica_id: str | None = Field(
        default=None, description="This replica's lease holder id (default: hostname-pid)."
    )
    lease_ttl: Duration = Field(
        default=30.0,
        gt=0,
        description="Account lease lifetime with a shared PostgreSQL store: a dead replica's "
        "accounts move on within this plus one heartbeat.",
    )
    lease_heartbeat: Duration | None = Field(
        default=None,
        gt=0,
        description="Seconds between lease renewals (default: a third of lease_ttl).",
    )
    accounts_from_db: bool = Field(
        default=False, description="Also poll accounts added with `pop3bridge accounts add`."
    )
    accounts_refresh: Duration = Field(
        default=30.0,
        gt=0,
        description="Seconds between re-reads of the account list (database accounts added or "
        "removed are picked up without a restart).",
    )

    @model_validator(mode="after")
    def _heartbeat_inside_ttl(self) -> PollerConfig:
        if self.lease_heartbeat is not None and self.lease_heartbeat * 2 > self.lease_ttl:
            raise ValueError(
                f"lease_heartbeat ({self.lease_heartbeat:g}s) must be at most half of lease_ttl "
                f"({self.lease_ttl:g}s), so one failed renewal does not lose every lease"
            )
        return self


_POP3_VERBS = frozenset(
    [
        "USER",
        "PASS",
        "APOP",
        "AUTH",
        "STLS",
        "CAPA",
        "STAT",
        "LIST",
        "RETR",
        "DELE",
        "NOOP",
        "RSET",
        "QUIT",
        "TOP",
        "UIDL",
        "UTF8",
        "LANG",
    ]
)


def _verbs(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    upper = [v.upper() for v in values]
    unknown = sorted(set(upper) - _POP3_VERBS)
    if unknown:
        raise ValueError(
            f"unknown POP3 command(s) {', '.join(unknown)}; known: {' '.join(sorted(_POP3_VERBS))}"
        )
    return upper


class ProxyPolicy(_Model):
    allow: list[str] | None = Field(
        default=None, description="If set, only these POP3 commands are relayed."
    )
    deny: list[str] = Field(default_factory=list, description="POP3 commands refused with -ERR.")
    require_tls: bool = Field(
        default=False, description="Refuse USER/PASS/AUTH/APOP until the client link is encrypted."
    )
    max_connections_per_ip: int | None = Field(
        default=None, ge=1, description="Per client address."
    )
    max_connections_per_user: int | None = Field(default=None, ge=1, description="Per login name.")
    idle_timeout: Duration = Field(
        default=600.0,
        gt=0,
        description="RFC 1939 §3: an autologout timer must be at least 10 minutes.",
    )
    max_errors: int = Field(
        default=5, ge=1, description="-ERR responses before the session is closed."
    )
    max_auth_attempts: int = Field(
        default=3, ge=1, description="Failed logins before disconnecting."
    )
    read_only: bool = Field(
        default=False, description="Refuse DELE so the mailbox is never changed."
    )

    @field_validator("allow", "deny")
    @classmethod
    def _known_verbs(cls, value: list[str] | None) -> list[str] | None:
        return _verbs(value)


class ProxyUpstream(_Model):
    host: str = Field(description="Upstream POP3 server.")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Default 995 for implicit TLS, 110 otherwise."
    )
    tls: TLSMode = Field(default="implicit", description="`implicit`, `starttls` or `none`.")
    ca_file: str | None = Field(default=None, description="CA bundle for the upstream certificate.")
    insecure: bool = Field(default=False, description="Skip upstream certificate verification.")

    @model_validator(mode="after")
    def _port(self) -> ProxyUpstream:
        if self.port is None:
            self.port = 995 if self.tls == "implicit" else 110
        return self


class ProxyTap(_Model):
    webhook: str = Field(description="Webhook that receives copies of retrieved messages.")
    max_message_size: Size = Field(
        default=50 * 1024 * 1024,
        description="Larger messages are copied as metadata only (headers and size), never "
        "dropped; bounds the memory a tapped RETR can hold.",
    )


_ROUTE_MATCH = re.compile(r"^(\*|\*@[^@\s]+|[^@\s*]+@[^@\s*]+|[^@\s*]+)$")


class ProxyRoute(_Model):
    match: str = Field(description='`"user@example.com"`, `"*@example.com"` or `"*"`.')
    upstream: ProxyUpstream = Field(description="Server for the users this route matches.")
    rewrite_user: str | None = Field(
        default=None,
        description="Login name sent upstream instead; may use `{user}`, `{local}`, `{domain}`.",
    )
    policy: ProxyPolicy | None = Field(
        default=None, description="Overrides the proxy's default policy."
    )
    tap: ProxyTap | None = Field(default=None, description="Copy RETRieved messages to a webhook.")

    @field_validator("match")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if not _ROUTE_MATCH.match(value):
            raise ValueError('expected "user@domain", "*@domain" or "*"')
        return value

    @field_validator("rewrite_user")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                value.format(user="u@d", local="u", domain="d")
            except (KeyError, IndexError, ValueError):
                raise ValueError(
                    "only {user}, {local} and {domain} may appear in braces (write {{ for {)"
                ) from None
        return value


class ProxyListener(_Model):
    name: str = Field(description="Listener name (metrics label; Kubernetes port name).")
    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(ge=0, le=65535, description="Port to bind (0: any free port).")
    tls: ListenerTLS = Field(default="none", description="`implicit` for POP3S on this port.")
    starttls: bool = Field(default=False, description="Offer STLS on a plain listener.")
    cert_file: str | None = Field(default=None, description="Certificate chain (PEM) for TLS.")
    key_file: str | None = Field(default=None, description="Private key (PEM) for TLS.")
    proxy_protocol: bool = Field(
        default=False, description="Expect a HAProxy PROXY v1/v2 header (behind a load balancer)."
    )

    @model_validator(mode="after")
    def _tls(self) -> ProxyListener:
        problems: list[tuple[str, str]] = []
        if self.tls == "implicit" and self.starttls:
            problems.append(("starttls", "cannot be combined with tls: implicit"))
        if (self.tls == "implicit" or self.starttls) and not (self.cert_file and self.key_file):
            problems.append(("cert_file", "cert_file and key_file are required for TLS"))
        if problems:
            raise _KeyedProblem(problems)
        return self


class ProxyConfig(_Model):
    listeners: list[ProxyListener] = Field(
        default_factory=list, description="Where the proxy accepts POP3 clients."
    )
    upstream: ProxyUpstream | None = Field(
        default=None, description="The one server every client goes to (or use `routes`)."
    )
    routes: list[ProxyRoute] | None = Field(
        default=None, description="Per-user upstreams, first match wins."
    )
    policy: ProxyPolicy = Field(
        default_factory=lambda: ProxyPolicy(), description="Default policy for every session."
    )
    shutdown_grace: Duration = Field(
        default=30.0, description="On SIGTERM, seconds sessions get to finish before being closed."
    )
    log_commands: bool = Field(
        default=False,
        description="Log each command verb (arguments of PASS/AUTH are never logged).",
    )

    @model_validator(mode="after")
    def _target(self) -> ProxyConfig:
        problems: list[tuple[str, str]] = []
        if self.upstream is not None and self.routes is not None:
            problems.append(("routes", "give upstream or routes, not both"))
        elif self.listeners and self.upstream is None and not self.routes:
            problems.append(("upstream", "required when listeners are configured (or routes)"))
        problems += _duplicates("listeners", (x.name for x in self.listeners))
        if problems:
            raise _KeyedProblem(problems)
        return self


class OpsConfig(_Model):
    enabled: bool = Field(
        default=True, description="Serve /healthz, /readyz, /metrics, /status and /."
    )
    host: str = Field(
        default="127.0.0.1", description="Bind address (the container image uses 0.0.0.0)."
    )
    port: int = Field(default=8080, ge=0, le=65535, description="Bind port (0: any free port).")


class LoggingConfig(_Model):
    format: Literal["json", "text"] = Field(
        default="json", description="`json` lines for machines, `text` for people."
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Lowest level written."
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


def _duplicates(where: str, names: Iterable[str]) -> list[tuple[str, str]]:
    seen: set[str] = set()
    problems = []
    for i, name in enumerate(names):
        if name in seen:
            problems.append((f"{where}[{i}].name", f"duplicate name {name!r}"))
        seen.add(name)
    return problems


class Settings(_Model):
    """The whole configuration file. Build from a dict with `Settings.model_validate(d)`."""

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
    proxy: ProxyConfig = Field(default_factory=lambda: ProxyConfig(), description="The POP3 proxy.")
    ops: OpsConfig = Field(
        default_factory=lambda: OpsConfig(), description="Health/metrics endpoint."
    )
    logging: LoggingConfig = Field(
        default_factory=lambda: LoggingConfig(), description="Log output."
    )

    @model_validator(mode="after")
    def _references(self) -> Settings:
        problems = _duplicates("webhooks", (w.name for w in self.webhooks))
        problems += _duplicates("accounts", (a.name for a in self.accounts))
        hooks = {w.name for w in self.webhooks}
        for i, account in enumerate(self.accounts):
            if account.webhook not in hooks:
                problems.append((f"accounts[{i}].webhook", _no_webhook(account.webhook, hooks)))
        for i, route in enumerate(self.proxy.routes or []):
            if route.tap is not None and route.tap.webhook not in hooks:
                problems.append(
                    (f"proxy.routes[{i}].tap.webhook", _no_webhook(route.tap.webhook, hooks))
                )
        if problems:
            raise _KeyedProblem(problems)
        return self


def _no_webhook(name: str, hooks: set[str]) -> str:
    known = ", ".join(repr(h) for h in sorted(hooks)) or "none are configured"
    return f"no webhook named {name!r} (known: {known})"


# --------------------------------------------------------------------------- error formatting


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _join(base: str, key: str) -> str:
    if not key:
        return base
    if not base:
        return key
    return f"{base}{key}" if key.startswith("[") else f"{base}.{key}"


_TAGGED_UNION_NOISE = re.compile(
    r"\.(str|list\[str\]|SecretStr|list\[SecretStr\]|"
    r"function-after\[[^\]]*\]|function-before\[[^\]]*\]|"
    r"literal\[[^\]]*\]|int|float|bool)(?=\.|\[|$)"
)


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for err in exc.errors(include_input=False, include_url=False):
        base = _TAGGED_UNION_NOISE.sub("", _path(err["loc"]))
        original = (err.get("ctx") or {}).get("error")
        if isinstance(original, _KeyedProblem):
            pairs = [(_join(base, k), m) for k, m in original.problems]
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                msg = "required key is missing"
            elif err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; see `pop3bridge config reference`)"
            pairs = [(base, msg)]
        for pair in pairs:
            # A union (str | list[str]) reports the same key once per member; say it once.
            key = f"{pair[0]}\0{pair[1]}"
            if key not in seen:
                seen.add(key)
                problems.append(pair)
    return problems


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
            problems.append((f"accounts[{i}].webhook", _no_webhook(hook, names)))
    return problems


def _validate(model: type[BaseModel], data: Any, context: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        problems = _problems(exc)
        if model is Settings:
            problems += [p for p in _raw_references(data) if p not in problems]
        raise ConfigError(problems) from None


# --------------------------------------------------------------------------- loading


def _env_value(text: str) -> Any:
    # Lists and maps can be given whole in flow style; everything else stays a string and
    # pydantic converts it (so a numeric password is not turned into an int).
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        try:
            return yaml.safe_load(stripped)
        except yaml.YAMLError:
            return text
    return text


def _env_sort_key(item: tuple[str, str]) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in item[0].split("__")]


def apply_env(data: dict[str, Any], env: Mapping[str, str]) -> list[tuple[str, str]]:
    """Overlay ``POP3BRIDGE_A__B__C`` variables onto `data` in place; returns problems.

    Only variables whose first part is a top-level section count: other ``POP3BRIDGE_*``
    variables (the config path itself, test switches) are not configuration keys.
    """
    sections = set(Settings.model_fields)
    items = []
    for name, value in env.items():
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == CONFIG_ENV:
            continue
        rest = name[len(ENV_PREFIX) :]
        if rest.split("__", 1)[0].lower() in sections:
            items.append((rest, value))
    problems: list[tuple[str, str]] = []
    for rest, value in sorted(items, key=_env_sort_key):
        parts = rest.split("__")
        where = ENV_PREFIX + rest
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                index = _list_index(node, part)
                if index is None:
                    problems.append((where, f"no list element {part!r} (use an index or a name)"))
                    break
                if index == len(node):
                    node.append({})
                if last:
                    node[index] = _env_value(value)
                else:
                    if node[index] is None:
                        node[index] = {}
                    node = node[index]
            elif isinstance(node, dict):
                key = part.lower()
                if last:
                    node[key] = _env_value(value)
                else:
                    if node.get(key) is None:
                        node[key] = (
                            [] if key in ("webhooks", "accounts", "listeners", "routes") else {}
                        )
                    node = node[key]
            else:
                problems.append((where, f"{part.lower()!r} is below a value that is not a section"))
                break
    return problems


def _list_index(node: list[Any], part: str) -> int | None:
    if part.isdigit():
        index = int(part)
        return index if index <= len(node) else None
    for i, item in enumerate(node):
        if isinstance(item, dict) and str(item.get("name", "")) == part:
            return i
    for i, item in enumerate(node):
        if isinstance(item, dict) and str(item.get("name", "")).casefold() == part.casefold():
            return i
    return None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([("", f"config file {str(path)!r} does not exist")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("", f"config file {str(path)!r} cannot be read: {exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([("", f"config file {str(path)!r}: {problem}{where}")]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([("", f"config file {str(path)!r}: the top level must be a mapping")])
    return data


def load_settings(path: str | None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the YAML file at `path` (or ``$POP3BRIDGE_CONFIG``) plus `env` overrides.

    `env` defaults to ``os.environ``; it is also where ``*_env`` secrets are looked up.
    ``*_file`` paths that are relative resolve against the config file's directory.
    Raises `ConfigError` listing every problem found.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if path is None:
        path = environ.get(CONFIG_ENV) or None
    data: dict[str, Any] = {}
    base_dir: Path | None = None
    if path is not None:
        file = Path(path)
        data = _read_yaml(file)
        base_dir = file.resolve().parent
    problems = apply_env(data, environ)
    if problems:
        raise ConfigError(problems)
    settings: Settings = _validate(Settings, data, {"env": environ, "base_dir": base_dir})
    return settings


def validate_account(
    config: Mapping[str, Any],
    *,
    webhooks: Iterable[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> AccountConfig:
    """One account (e.g. a database row) checked with the config-file rules.

    `webhooks` are the configured webhook names the account may refer to; None skips that check.
    """
    account: AccountConfig = _validate(
        AccountConfig, dict(config), {"env": os.environ if env is None else env}
    )
    if webhooks is not None:
        names = set(webhooks)
        if account.webhook not in names:
            raise ConfigError([("webhook", _no_webhook(account.webhook, names))])
    return account

"""`proxy`: listeners, the upstream or per-user routes, the command policy and taps.

The verbs a policy may name are the core's: `bridge.pop3.commands.RESPONSE_KINDS` is the one
table of POP3 commands this program knows how to frame, so a verb it cannot relay cannot be
allowed or denied by name either.

These six models are built (their pydantic schemas made and validators compiled) only when a
configuration has a ``proxy:`` key, or when something validates or dumps one: a section most
configurations do not have cost every start-up ~9 M instructions (0.6 % of what `pop3bridge
once` runs before its first POST; the classes themselves, made at import, are most of the
rest). Hence ``defer_build`` here, and `BuiltWhenGiven` on the `Settings.proxy` field: its
schema is `validate_proxy` alone (`PlainValidator` would still generate the model's schema,
for serialization), so `Settings` is built without the proxy's models. A given section's
errors keep their keys, ``proxy.listeners[0].port``, because pydantic-core prefixes the
location of a `ValidationError` raised in a field validator; a dump serialises the instance
by its own model, as the "any" serialiser does for any model. The field's default is
`absent_proxy`: the ``ProxyConfig()`` every configuration without the key has, made without
validation, and equal to it (tests/config/test_config.py).
"""

from __future__ import annotations

import re
from typing import Any, Literal, Self

from pydantic import (
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema, core_schema

from bridge.config.base import Section
from bridge.config.errors import KeyedProblem, duplicates
from bridge.config.files import ConfigPath
from bridge.config.units import Duration, ListenerTLS, Size, TLSSetting
from bridge.pop3.commands import RESPONSE_KINDS

__all__ = [
    "POP3_VERBS",
    "BuiltWhenGiven",
    "ProxyConfig",
    "ProxyListener",
    "ProxyPolicy",
    "ProxyRoute",
    "ProxyTap",
    "ProxyUpstream",
    "absent_proxy",
    "validate_proxy",
]

POP3_VERBS = frozenset(verb for verb, _ in RESPONSE_KINDS)
# The proxy logs in upstream with the password its client gave: no OAuth mechanisms.
UpstreamAuth = Literal["auto", "user", "apop", "plain", "login", "cram-md5"]


def _verbs(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    upper = [v.upper() for v in values]
    unknown = sorted(set(upper) - POP3_VERBS)
    if unknown:
        raise ValueError(
            f"unknown POP3 command(s) {', '.join(unknown)}; known: {' '.join(sorted(POP3_VERBS))}"
        )
    return upper


class _Deferred(Section):
    """Built at its first validation, not at import (see the module docstring)."""

    model_config = ConfigDict(defer_build=True)


class ProxyPolicy(_Deferred):
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


class ProxyUpstream(_Deferred):
    host: str = Field(description="Upstream POP3 server.")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Default 995 for implicit TLS, 110 otherwise."
    )
    tls: TLSSetting = Field(default="implicit", description="`implicit`, `starttls` or `none`.")
    ca_file: ConfigPath | None = Field(
        default=None, description="CA bundle for the upstream certificate."
    )
    insecure: bool = Field(default=False, description="Skip upstream certificate verification.")
    tls_resume: bool = Field(
        default=True,
        description="Resume the last TLS session with this upstream instead of a full "
        "handshake; the certificate is verified again at least hourly. `false`: a full "
        "handshake every connection.",
    )
    auth: UpstreamAuth = Field(
        default="auto",
        description="Routing mode: how the proxy logs in to this upstream with the client's "
        "credentials. `auto` picks the strongest mechanism the server offers and, when one is "
        "refused (an APOP timestamp from a server that refuses APOP for the user), tries the "
        "next it offers; plaintext mechanisms only with `tls: none` or TLS. With a fixed "
        "`upstream` the client logs in itself and this key is not used.",
    )

    @model_validator(mode="after")
    def _port(self) -> Self:
        if self.port is None:
            self.port = 995 if self.tls == "implicit" else 110
        return self


class ProxyTap(_Deferred):
    webhook: str = Field(description="Webhook that receives copies of retrieved messages.")
    max_message_size: Size = Field(
        default=50 * 1024 * 1024,
        description="Larger messages are copied as metadata only (headers and size), never "
        "dropped; bounds the memory a tapped RETR can hold.",
    )


_ROUTE_MATCH = re.compile(r"^(\*|\*@[^@\s]+|[^@\s*]+@[^@\s*]+|[^@\s*]+)$")


class ProxyRoute(_Deferred):
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


class ProxyListener(_Deferred):
    name: str = Field(description="Listener name (metrics label; Kubernetes port name).")
    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(ge=0, le=65535, description="Port to bind (0: any free port).")
    tls: ListenerTLS = Field(default="none", description="`implicit` for POP3S on this port.")
    starttls: bool = Field(default=False, description="Offer STLS on a plain listener.")
    cert_file: ConfigPath | None = Field(
        default=None, description="Certificate chain (PEM) for TLS."
    )
    key_file: ConfigPath | None = Field(default=None, description="Private key (PEM) for TLS.")
    proxy_protocol: bool = Field(
        default=False, description="Expect a HAProxy PROXY v1/v2 header (behind a load balancer)."
    )

    @model_validator(mode="after")
    def _tls(self) -> Self:
        problems: list[tuple[str, str]] = []
        if self.tls == "implicit" and self.starttls:
            problems.append(("starttls", "cannot be combined with tls: implicit"))
        if (self.tls == "implicit" or self.starttls) and not (self.cert_file and self.key_file):
            problems.append(("cert_file", "cert_file and key_file are required for TLS"))
        if problems:
            raise KeyedProblem(problems)
        return self


class ProxyConfig(_Deferred):
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
    def _target(self) -> Self:
        problems: list[tuple[str, str]] = []
        if self.upstream is not None and self.routes is not None:
            problems.append(("routes", "give upstream or routes, not both"))
        elif self.listeners and self.upstream is None and not self.routes:
            problems.append(("upstream", "required when listeners are configured (or routes)"))
        problems += duplicates("listeners", (x.name for x in self.listeners))
        if problems:
            raise KeyedProblem(problems)
        return self


def validate_proxy(value: Any, info: ValidationInfo) -> ProxyConfig:
    """`Settings.proxy`'s validator: what the nested model field did, the build deferred.

    An instance is kept as it is (pydantic's default, ``revalidate_instances="never"``);
    anything else is validated as `ProxyConfig`, whose errors pydantic-core reports under
    ``proxy`` as it did for the nested model.
    """
    if isinstance(value, ProxyConfig):
        return value
    return ProxyConfig.model_validate(value, context=info.context)


def absent_proxy() -> ProxyConfig:
    """``ProxyConfig()``, made without building the proxy's models: all its defaults are
    plain values that validate to themselves, and its model validator accepts them."""
    return ProxyConfig.model_construct(_fields_set=set(), policy=ProxyPolicy.model_construct())


class BuiltWhenGiven:
    """``Annotated`` marker of `Settings.proxy`: validated by `validate_proxy` only."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.with_info_plain_validator_function(validate_proxy)

"""Settings -> the poller's own records (`AccountSpec`, `PollerOptions`).

This is the only module of the poller that reads the account and poller sections of the
configuration, so a renamed key breaks one place (webhooks and the store are read by
`bridge.runtime`, which the proxy's tap shares). Secrets leave their `SecretStr` wrappers only
through `bridge.runtime.secret_value`, on their way into the objects that use them, and each one
is registered with the log redactor first.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any

from bridge.attachments.templates import LinkMinter
from bridge.mail import DEFAULT_OPTIONS
from bridge.poller.app import PollerOptions
from bridge.poller.canary import CanaryKey, CanaryOptions
from bridge.poller.oauth import DEFAULT_WARN_BEFORE, TokenProvider
from bridge.poller.spec import AccountSpec, FetchOptions
from bridge.runtime import claim_seconds, mail_options, secret_value

__all__ = ["account_spec", "poller_options"]

log = logging.getLogger(__name__)


def fetch_options(
    webhook: Any, account: Any = None, links: LinkMinter | None = None
) -> FetchOptions:
    options = mail_options(account) if account is not None else DEFAULT_OPTIONS
    if webhook is None:
        return FetchOptions(options=options, links=links)
    return FetchOptions(
        attachment_inline_limit=int(getattr(webhook, "attachment_inline_limit", 1024 * 1024)),
        include_raw=bool(getattr(webhook, "include_raw", False)),
        reshaped=str(getattr(webhook, "format", "standard") or "standard") != "standard",
        options=options,
        links=links,
    )


def account_spec(
    account: Any,
    webhook: Any,
    providers: dict[str, TokenProvider],
    links: LinkMinter | None = None,
) -> AccountSpec:
    """An `AccountSpec` from one validated account model and its webhook model.

    `providers` caches one `TokenProvider` per account name, so a token outlives one poll; it is
    replaced when the account's OAuth settings change (a new refresh token after a revoked grant).
    `links` (from the `attachments:` section) makes big attachments links.
    """
    token = invalidate = None
    oauth_key = ""
    oauth = getattr(account, "oauth2", None)
    if oauth is not None:
        refresh = secret_value(oauth.refresh_token) or ""
        client_secret = secret_value(getattr(oauth, "client_secret", None))
        scope = getattr(oauth, "scope", None)
        material = "\0".join(
            (str(oauth.token_url), str(oauth.client_id), refresh, client_secret or "", scope or "")
        )
        oauth_key = hashlib.sha256(material.encode()).hexdigest()[:16]
        provider = providers.get(account.name)
        if provider is None or provider.key != oauth_key:
            provider = TokenProvider(
                str(oauth.token_url),
                str(oauth.client_id),
                refresh,
                client_secret=client_secret,
                scope=scope,
                account=account.name,
                warn_before=float(getattr(oauth, "warn_before", DEFAULT_WARN_BEFORE)),
                key=oauth_key,
            )
            providers[account.name] = provider
        token, invalidate = provider.token, provider.invalidate
    return AccountSpec(
        name=account.name,
        host=account.host,
        port=account.port,
        tls=account.tls,
        username=account.username,
        password=secret_value(getattr(account, "password", None)),
        auth=str(getattr(account, "auth", "auto")),
        ca_file=_opt_str(getattr(account, "ca_file", None)),
        insecure=bool(getattr(account, "insecure", False)),
        tls_resume=bool(getattr(account, "tls_resume", True)),
        allow_plaintext=bool(getattr(account, "allow_plaintext", False)),
        pipelining=bool(getattr(account, "pipelining", True)),
        connect_timeout=float(getattr(account, "connect_timeout", 30.0)),
        read_timeout=float(getattr(account, "read_timeout", 120.0)),
        poll_interval=float(account.poll_interval),
        on_delivered=account.on_delivered,
        initial=account.initial,
        max_message_size=int(account.max_message_size),
        enabled=bool(getattr(account, "enabled", True)),
        webhook=account.webhook,
        fetch=fetch_options(webhook, account, links),
        token=token,
        invalidate_token=invalidate,
        oauth_key=oauth_key,
        canary=_canary(account),
        canary_key=_canary_key(webhook),
    )


def _canary(account: Any) -> CanaryOptions | None:
    config = getattr(account, "canary", None)
    if config is None:
        return None
    return CanaryOptions(
        url=str(config.smtp),
        every=float(config.every),
        max_age=float(config.max_age),
        to=str(config.to or account.username),
        sender=str(config.sender),
    )


def _canary_key(webhook: Any) -> CanaryKey | None:
    """Keyed with the account's webhook secrets (every one of a rotation list verifies)."""
    raw = getattr(webhook, "secret", None) if webhook is not None else None
    items = raw if isinstance(raw, list | tuple) else [raw]
    values = [v for v in (secret_value(x) for x in items if x is not None) if v]
    return CanaryKey.derive(values) if values else None


def poller_options(
    poller: Any, *, shared_store: bool, webhook_timeouts: Iterable[float] | None = None
) -> PollerOptions:
    """`shared_store` (PostgreSQL): several replicas may run, so accounts are leased.
    `webhook_timeouts` (seconds per webhook) size the delivery claims; None keeps the default.
    """
    defaults = PollerOptions()
    replica = getattr(poller, "replica_id", None) or defaults.replica_id
    return PollerOptions(
        max_concurrent_accounts=int(
            getattr(poller, "max_concurrent_accounts", defaults.max_concurrent_accounts)
        ),
        jitter=float(getattr(poller, "jitter", defaults.jitter)),
        poll_tick=float(getattr(poller, "poll_tick", defaults.poll_tick)),
        shutdown_grace=float(getattr(poller, "shutdown_grace", defaults.shutdown_grace)),
        delivery_concurrency=int(
            getattr(poller, "delivery_concurrency", defaults.delivery_concurrency)
        ),
        replica_id=str(replica),
        leases=shared_store,
        lease_ttl=float(getattr(poller, "lease_ttl", defaults.lease_ttl)),
        lease_heartbeat=_opt_float(getattr(poller, "lease_heartbeat", None)),
        accounts_refresh=float(getattr(poller, "accounts_refresh", defaults.accounts_refresh)),
        claim_seconds=(
            defaults.claim_seconds if webhook_timeouts is None else claim_seconds(webhook_timeouts)
        ),
    )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)

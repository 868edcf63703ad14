"""What every poller subcommand shares: the store, the sender, the accounts, the app.

`PollerRuntime` is an async context manager that opens (and on exit closes, in reverse order) the
store and the pooled webhook sender (that part is `bridge.runtime.DeliveryRuntime`, which the
proxy's tap uses too) and adds the poller's accounts. Commands stay thin: they parse arguments,
enter a runtime and call one method of `PollerApp` or the store.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from bridge.poller.app import PollerApp, PollerOptions
from bridge.poller.build import account_spec, poller_options
from bridge.poller.oauth import TokenProvider
from bridge.poller.spec import AccountSpec
from bridge.runtime import DeliveryRuntime

__all__ = ["PollerRuntime"]

log = logging.getLogger(__name__)


class PollerRuntime(DeliveryRuntime):
    """`DeliveryRuntime` plus the poller's account source and `PollerApp`, built from settings."""

    def __init__(
        self,
        settings: Any,
        *,
        with_sender: bool = True,
        pool: Any = None,
        defer_sender: bool = False,
    ) -> None:
        super().__init__(settings, with_sender=with_sender, pool=pool, defer_sender=defer_sender)
        self._providers: dict[str, TokenProvider] = {}
        # name -> (what the spec was built from, the spec): see `accounts`.
        self._specs: dict[str, tuple[object, AccountSpec]] = {}

    async def accounts(self) -> list[AccountSpec]:
        """Config-file accounts, plus database accounts when `poller.accounts_from_db`.

        A database account with the same name as a file account is ignored (the file wins,
        so a deploy can always override what was added at runtime), with a warning.

        The scheduler asks again every 30 s. A spec is rebuilt (and a database account
        validated again) only when what it is built from changed: the same file account model,
        or an equal database row, gives back the same `AccountSpec`. With 10,000 accounts,
        rebuilding every spec each time cost about 1.5 s of CPU every 30 s, 5 % of a core.
        """
        cache, self._specs = self._specs, {}
        specs: dict[str, AccountSpec] = {}
        for account in self.settings.accounts:
            specs[account.name] = self._cached(cache, account.name, account, account)
        if getattr(self.settings.poller, "accounts_from_db", False):
            for name, config in await self.store.list_accounts():
                if name in specs:
                    log.warning("database account %r ignored: the config file defines it", name)
                    continue
                try:
                    specs[name] = self._cached(cache, name, config, None)
                except Exception as exc:
                    log.error("database account %r is invalid, skipped: %s", name, exc)
        return list(specs.values())

    def _cached(
        self, cache: dict[str, tuple[object, AccountSpec]], name: str, source: Any, model: Any
    ) -> AccountSpec:
        """The spec for `source` (a file account model, compared by identity, or a database
        row, compared by value), from `cache` when it was built from the same thing."""
        hit = cache.get(name)
        if hit is not None and (hit[0] is source or (model is None and hit[0] == source)):
            spec = hit[1]
        else:
            if model is None:
                model = self.validate_account({**source, "name": name})
            spec = self._spec(model)
        self._specs[name] = (source, spec)
        return spec

    def oauth_states(self) -> dict[str, tuple[str | None, float | None]]:
        """account -> (what to do to re-authorise, or None; refresh token expiry, or None)."""
        return {
            name: (p.needs_reauth, p.refresh_token_expires_at)
            for name, p in self._providers.items()
        }

    def validate_account(self, config: dict[str, Any]) -> Any:
        """A database account's JSON, checked with the config-file rules and webhook names."""
        from bridge.config import validate_account

        return validate_account(config, webhooks=list(self.webhooks))

    def _spec(self, account: Any) -> AccountSpec:
        return account_spec(
            account, self.webhooks.get(account.webhook), self._providers, self.links
        )

    def app(self, **hooks: Any) -> PollerApp:
        options: PollerOptions = poller_options(
            self.settings.poller,
            shared_store=self.shared_store,
            webhook_timeouts=[float(w.timeout) for w in self.settings.webhooks],
        )
        retention = getattr(self.settings, "retention", None)
        if retention is not None:
            options = dataclasses.replace(options, custody_retention=float(retention.custody))
        if self.sender is None and self.defer_sender and self.with_sender:
            # The app opens it once there is something to deliver (`PollerApp.once`).
            hooks.setdefault("open_sender", self.open_sender)
        return PollerApp(self.store, self.sender, self.routes, self.accounts, options, **hooks)

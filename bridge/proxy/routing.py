"""Which upstream a login name goes to, and under which name it logs in there.

Routes are tried in order, first match wins, with one exception that keeps tables easy to
write: an exact name always beats a `*@domain` wildcard, which always beats the default `*`,
wherever they appear. Names compare case-insensitively (mail addresses are used as POP3 login
names and clients differ in how they case them); the name sent upstream keeps the client's case
unless the route rewrites it.

`rewrite_user` may contain `{user}` (the whole name), `{local}` (before the "@") and
`{domain}` (after it), so a whole domain can move to a server that wants bare local parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.config import ProxyConfig, ProxyPolicy, ProxyRoute, ProxyTap, ProxyUpstream
from bridge.proxy.policy import Policy, PolicyRules

__all__ = ["Route", "RoutingTable", "UnknownUser", "policy_rules"]


def policy_rules(config: ProxyPolicy) -> PolicyRules:
    """The configuration's `policy:` as the plain data the relay's policy is built from."""
    return PolicyRules(
        allow=frozenset(config.allow) if config.allow is not None else None,
        deny=frozenset(config.deny),
        require_tls=config.require_tls,
        read_only=config.read_only,
        max_errors=config.max_errors,
        max_auth_attempts=config.max_auth_attempts,
        max_connections_per_user=config.max_connections_per_user,
    )


class UnknownUser(LookupError):
    """No route matches the login name and there is no default route."""


@dataclass(frozen=True, slots=True)
class Route:
    name: str  # the route's match pattern, used in logs and tap account names
    upstream: ProxyUpstream
    policy: Policy
    tap: ProxyTap | None
    rewrite_user: str | None = None

    def upstream_user(self, user: str) -> str:
        if self.rewrite_user is None:
            return user
        local, _, domain = user.partition("@")
        return self.rewrite_user.format(user=user, local=local, domain=domain)


class RoutingTable:
    def __init__(self, routes: list[ProxyRoute], default_policy: ProxyPolicy) -> None:
        self._exact: dict[str, Route] = {}
        self._domain: dict[str, Route] = {}
        self._default: Route | None = None
        for cfg in routes:
            route = Route(
                cfg.match,
                cfg.upstream,
                Policy(policy_rules(cfg.policy or default_policy)),
                cfg.tap,
                cfg.rewrite_user,
            )
            pattern = cfg.match.lower()
            if pattern == "*":
                self._default = self._default or route
            elif pattern.startswith("*@"):
                self._domain.setdefault(pattern[2:], route)
            else:
                self._exact.setdefault(pattern, route)

    @classmethod
    def fixed(cls, config: ProxyConfig) -> RoutingTable:
        """A table whose only route is the fixed upstream (all users go there)."""
        assert config.upstream is not None
        table = cls([], config.policy)
        table._default = Route("*", config.upstream, Policy(policy_rules(config.policy)), None)
        return table

    def lookup(self, user: str) -> Route:
        name = user.lower()
        route = self._exact.get(name)
        if route is None and "@" in name:
            route = self._domain.get(name.rpartition("@")[2])
        if route is None:
            route = self._default
        if route is None:
            raise UnknownUser("no route for this user")
        return route

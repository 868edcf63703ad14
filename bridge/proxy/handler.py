"""The proxy's decisions behind one seam: a handler protocol and the session it is asked about.

aiosmtpd's idea: the protocol code calls `handle_VERB` hooks on one handler object instead of
taking a callback per decision. The relay (sans-I/O) frames, orders and applies the policy;
what is not the protocol's to decide it asks `handler`:

* `handle_LOGIN(session, user)`: may `user` be logged in now? Asked when a login is about to
  succeed (fixed upstream: the upstream said +OK; routing: before the proxy logs in upstream).
  False refuses it with `-ERR [IN-USE]` (the per-user connection limit).
* `handle_RETR(session, msgno)`: a capture for this retrieved message, or None (the tap). Asked
  only when `session.tapping`, so a session without a tap never pays for the call and its
  RETRs keep the pass-through path.

Policy is data, not a hook: `session.policy`, read for every command on the hot path. The
session glue (`bridge.proxy.session`) sets `session.route`, `policy` and `tapping` when a
routing login picks a route; the relay sets `session.user` when a login succeeds.

Below the configuration layer: `ProxySession` holds the proxy's own `Route` and `Policy`, plain
objects; nothing here imports `bridge.config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bridge.proxy.policy import Policy, PolicyRules

if TYPE_CHECKING:
    from bridge.proxy.relay import CaptureSink
    from bridge.proxy.routing import Route

__all__ = ["ProxyHandler", "ProxySession"]


@dataclass(slots=True, eq=False)
class ProxySession:
    """What the proxy knows about one client session, for the handler and the log."""

    policy: Policy
    listener: str = ""
    client: tuple[str, int] = ("", 0)
    route: Route | None = None  # the fixed route, or the routing login's once it succeeded
    user: str | None = None  # the login name, once logged in
    tapping: bool = False  # `handle_RETR` may return a capture in this session
    claimed: str | None = None  # the name `handle_LOGIN` counted (per-user limit), lower-cased

    @classmethod
    def of(cls, rules: PolicyRules | None = None) -> ProxySession:
        """A session with only a policy (a relay on its own: tests, benchmarks)."""
        return cls(Policy(rules or PolicyRules()))


class ProxyHandler(Protocol):
    """The hooks the relay calls; see the module docstring."""

    def handle_LOGIN(self, session: ProxySession, user: str) -> bool: ...

    def handle_RETR(self, session: ProxySession, msgno: int) -> CaptureSink | None: ...

"""OAuth2 access tokens for XOAUTH2/OAUTHBEARER logins (refresh-token grant, RFC 6749 §6).

Gmail and Microsoft 365 no longer accept passwords over POP3; an account instead carries a
long-lived refresh token that the provider exchanges for short-lived access tokens. The token is
cached and refreshed `REFRESH_MARGIN` seconds before it expires, so a poll never starts with a
token about to die mid-login; `invalidate()` forgets it after the server refused a login, so the
one retry gets a fresh token. Concurrent callers share one refresh (a lock), so the token endpoint
sees one request, not one per waiting session.

If the provider rotates the refresh token (returns a new `refresh_token`), the new one is used
from then on, in memory: persisting it is up to the operator's secret store.

Lifecycle. A refresh token dies in two ways a program cannot repair: the user revokes consent
(or the admin removes the app), or the token reaches an expiry the provider set (Google limits
refresh tokens of apps "in testing" to 7 days and says so in `refresh_token_expires_in`). The
first shows up as `invalid_grant` (RFC 6749 section 5.2), which `OAuthGrantRevoked` carries with
what the operator has to do; the scheduler then parks the account instead of asking the token
endpoint again every backoff period. The second is announced: the expiry is kept on wall-clock
time (`refresh_token_expires_at`) and a warning is logged at every refresh inside `warn_before`.

No token, secret or refresh token ever appears in an exception message or log line; errors name
the token URL's host and the provider's `error` code only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    # Imported where a token is refreshed: the scheduler imports this module for
    # `OAuthGrantRevoked`, and a `once` that finds nothing to deliver imports no aiohttp.
    import aiohttp

__all__ = ["OAuthError", "OAuthGrantRevoked", "TokenProvider"]

log = logging.getLogger(__name__)

REFRESH_MARGIN = 60.0
DEFAULT_LIFETIME = 3600.0  # when the provider does not say (expires_in is only RECOMMENDED)
DEFAULT_WARN_BEFORE = 2 * 86400.0


class OAuthError(Exception):
    """The token endpoint could not be reached or refused the refresh token."""


class OAuthGrantRevoked(OAuthError):
    """`invalid_grant`: the refresh token is revoked or expired; only a person can fix that.

    `action` is the instruction shown on the status page and logged once.
    """

    def __init__(self, message: str, action: str) -> None:
        super().__init__(f"{message}; {action}")
        self.action = action


class TokenProvider:
    def __init__(
        self,
        token_url: str,
        client_id: str,
        refresh_token: str,
        *,
        client_secret: str | None = None,
        scope: str | None = None,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        session: aiohttp.ClientSession | None = None,
        account: str | None = None,
        warn_before: float = DEFAULT_WARN_BEFORE,
        wall: Callable[[], float] = time.time,
        key: str = "",
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self.scope = scope
        self.timeout = timeout
        self.clock = clock
        self._session = session
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.refreshes = 0  # how many times the endpoint was asked (for tests and status)
        self.account = account
        self.key = key  # digest of the settings it was built from (see poller.build)
        self.warn_before = warn_before
        self.wall = wall
        # Unix time the refresh token stops working, when the provider said so.
        self.refresh_token_expires_at: float | None = None
        # Set by `invalid_grant`, cleared by the next successful refresh: what to do about it.
        self.needs_reauth: str | None = None

    def __repr__(self) -> str:
        return f"TokenProvider(token_url={self.token_url!r}, client_id={self.client_id!r})"

    def invalidate(self) -> None:
        """Forget the cached token (the server refused it): the next `token()` refreshes."""
        self._token = None
        self._expires_at = 0.0

    async def token(self) -> str:
        """A valid access token, refreshed when missing or within the margin of expiry."""
        async with self._lock:
            if self._token is None or self.clock() >= self._expires_at - REFRESH_MARGIN:
                await self._refresh()
            assert self._token is not None
            return self._token

    async def _refresh(self) -> None:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": self._refresh_token,
            "client_id": self.client_id,
        }
        if self._client_secret:
            form["client_secret"] = self._client_secret
        if self.scope:
            form["scope"] = self.scope
        from bridge.delivery.client import aiohttp, trust_system_cas

        trust_system_cas()  # before a request that may verify against them
        host = urlsplit(self.token_url).hostname or "the token endpoint"
        self.refreshes += 1
        session = self._session or aiohttp.ClientSession()
        try:
            async with session.post(
                self.token_url,
                data=form,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"Accept": "application/json"},
            ) as resp:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = None
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OAuthError(
                f"cannot reach the OAuth token endpoint at {host}: {type(exc).__name__}"
            ) from None
        finally:
            if self._session is None:
                await session.close()
        if not isinstance(body, dict):
            raise OAuthError(f"the OAuth token endpoint at {host} answered HTTP {status}, not JSON")
        if status != 200 or not isinstance(body.get("access_token"), str):
            code = body.get("error") if isinstance(body.get("error"), str) else "no access_token"
            if code == "invalid_grant":
                action = (
                    f"re-authorise: run the provider's consent flow again for client "
                    f"{self.client_id!r}, put the new refresh token in oauth2.refresh_token "
                    "(or its _file/_env source) and restart pop3bridge or update the account"
                )
                self.needs_reauth = action
                raise OAuthGrantRevoked(
                    f"the OAuth token endpoint at {host} refused the refresh token "
                    f"(HTTP {status}, invalid_grant: consent revoked or the token expired)",
                    action,
                )
            raise OAuthError(
                f"the OAuth token endpoint at {host} refused the refresh (HTTP {status}, "
                f"{code}); check client_id, client_secret and refresh_token"
            )
        self._token = body["access_token"]
        lifetime = body.get("expires_in")
        seconds = float(lifetime) if isinstance(lifetime, int | float) else DEFAULT_LIFETIME
        self._expires_at = self.clock() + seconds
        rotated = body.get("refresh_token")
        if isinstance(rotated, str) and rotated:
            self._refresh_token = rotated
        self.needs_reauth = None
        rt_life = body.get("refresh_token_expires_in")
        if isinstance(rt_life, int | float) and not isinstance(rt_life, bool):
            self.refresh_token_expires_at = self.wall() + float(rt_life)
        extra = {"token_host": host, "expires_in": seconds}
        if self.account is not None:
            extra["account"] = self.account
        log.info("OAuth access token refreshed", extra=extra)
        left = self.refresh_token_left()
        if left is not None and left <= self.warn_before:
            log.warning(
                "the OAuth refresh token expires in %.1f days; re-authorise before then "
                "(consent flow for client %r, then update oauth2.refresh_token)",
                max(left, 0.0) / 86400,
                self.client_id,
                extra=extra,
            )

    def refresh_token_left(self) -> float | None:
        """Seconds until the refresh token expires, when the provider announced an expiry."""
        if self.refresh_token_expires_at is None:
            return None
        return self.refresh_token_expires_at - self.wall()

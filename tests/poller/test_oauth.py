"""OAuth2: the token provider against a local aiohttp token endpoint, and XOAUTH2/OAUTHBEARER
logins (with the refresh-and-retry-once rule) against the fake POP3 server checking bearer
tokens."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from bridge.poller.oauth import OAuthError, OAuthGrantRevoked, TokenProvider
from bridge.poller.poll import poll_account
from bridge.poller.spec import AccountSpec
from bridge.pop3.errors import AuthenticationFailed
from bridge.store import Store
from bridge.testing.fakepop3 import FakePOP3Server
from tests.support.wait import wait_until

REFRESH = "rt-secret-123"
CLIENT_SECRET = "cs-secret-456"


@dataclass
class TokenEndpoint:
    url: str = ""
    issued: list[str] = field(default_factory=list)
    forms: list[dict[str, str]] = field(default_factory=list)
    expires_in: int = 3600
    refuse: bool = False
    rotate_to: str | None = None
    rt_expires_in: int | None = None
    counter: itertools.count[int] = field(default_factory=itertools.count)


@pytest.fixture
async def endpoint() -> AsyncIterator[TokenEndpoint]:
    state = TokenEndpoint()

    async def token(request: web.Request) -> web.Response:
        form = dict(await request.post())
        state.forms.append({k: str(v) for k, v in form.items()})
        if state.refuse or form.get("refresh_token") not in (REFRESH, state.rotate_to):
            return web.json_response({"error": "invalid_grant"}, status=400)
        tok = f"at-{next(state.counter)}"
        state.issued.append(tok)
        body: dict[str, object] = {
            "access_token": tok,
            "token_type": "Bearer",
            "expires_in": state.expires_in,
        }
        if state.rotate_to:
            body["refresh_token"] = state.rotate_to
        if state.rt_expires_in is not None:
            body["refresh_token_expires_in"] = state.rt_expires_in
        return web.json_response(body)

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/token"
    yield state
    await runner.cleanup()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_token_is_cached_and_refreshed_before_expiry(endpoint: TokenEndpoint) -> None:
    clock = Clock()
    p = TokenProvider(
        endpoint.url,
        "cid",
        REFRESH,
        client_secret=CLIENT_SECRET,
        scope="https://mail.example/.default",
        clock=clock,
    )
    first = await p.token()
    assert first == "at-0"
    assert endpoint.forms[0] == {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH,
        "client_id": "cid",
        "client_secret": CLIENT_SECRET,
        "scope": "https://mail.example/.default",
    }
    clock.now += 3000  # still > 60 s before expiry
    assert await p.token() == "at-0"
    clock.now += 560  # within the margin: refreshed early
    assert await p.token() == "at-1"
    p.invalidate()
    assert await p.token() == "at-2"
    assert p.refreshes == 3


async def test_concurrent_callers_share_one_refresh(endpoint: TokenEndpoint) -> None:
    p = TokenProvider(endpoint.url, "cid", REFRESH)
    tokens = await asyncio.gather(*(p.token() for _ in range(20)))
    assert set(tokens) == {"at-0"}
    assert len(endpoint.forms) == 1


async def test_rotated_refresh_token_is_used_next_time(endpoint: TokenEndpoint) -> None:
    endpoint.rotate_to = "rt-rotated"
    p = TokenProvider(endpoint.url, "cid", REFRESH)
    await p.token()
    p.invalidate()
    await p.token()
    assert [f["refresh_token"] for f in endpoint.forms] == [REFRESH, "rt-rotated"]


async def test_refused_refresh_is_a_typed_error_without_secrets(endpoint: TokenEndpoint) -> None:
    endpoint.refuse = True
    p = TokenProvider(endpoint.url, "cid", REFRESH, client_secret=CLIENT_SECRET)
    with pytest.raises(OAuthError) as info:
        await p.token()
    text = str(info.value) + repr(p)
    assert "invalid_grant" in text and "HTTP 400" in text
    assert REFRESH not in text and CLIENT_SECRET not in text


async def test_unreachable_endpoint_is_a_typed_error() -> None:
    p = TokenProvider("http://127.0.0.1:9/token", "cid", REFRESH, timeout=2)
    with pytest.raises(OAuthError, match="cannot reach"):
        await p.token()


def oauth_pop3(valid: set[str]) -> FakePOP3Server:
    """An empty mailbox for me@example.com that accepts exactly the bearer tokens in `valid`
    (a set the test may change while it runs); `bearer_logins` records every attempt."""
    return FakePOP3Server(user="me@example.com", bearer_tokens=valid)


def oauth_spec(port: int, provider: TokenProvider, mech: str) -> AccountSpec:
    return AccountSpec(
        name="oauth",
        host="127.0.0.1",
        port=port,
        tls="none",
        username="me@example.com",
        webhook="main",
        auth=mech,
        allow_plaintext=True,
        token=provider.token,
        invalidate_token=provider.invalidate,
    )


@pytest.mark.parametrize("mech", ["xoauth2", "oauthbearer"])
async def test_oauth_login_refreshes_once_after_a_refused_token(
    endpoint: TokenEndpoint, store: Store, mech: str
) -> None:
    p = TokenProvider(endpoint.url, "cid", REFRESH)
    async with oauth_pop3(valid={"at-1"}) as server:  # the first token is already revoked
        report = await poll_account(oauth_spec(server.port, p, mech), store)
    assert report.on_server == 0
    assert server.bearer_logins == [(mech.upper(), "at-0", False), (mech.upper(), "at-1", True)]
    assert p.refreshes == 2


async def test_oauth_login_refused_twice_is_an_authentication_failure(
    endpoint: TokenEndpoint, store: Store
) -> None:
    p = TokenProvider(endpoint.url, "cid", REFRESH)
    async with oauth_pop3(valid=set()) as server:
        with pytest.raises(AuthenticationFailed):
            await poll_account(oauth_spec(server.port, p, "xoauth2"), store)
    assert len(server.bearer_logins) == 2  # one retry, not a loop


# -- lifecycle: a revoked grant, an announced refresh-token expiry ---------------------------


async def test_invalid_grant_says_what_to_do_and_clears_after_a_good_refresh(
    endpoint: TokenEndpoint,
) -> None:
    endpoint.refuse = True
    p = TokenProvider(endpoint.url, "cid", REFRESH, account="gmail")
    with pytest.raises(OAuthGrantRevoked) as info:
        await p.token()
    assert p.needs_reauth is not None and "consent flow" in p.needs_reauth
    assert info.value.action == p.needs_reauth
    assert REFRESH not in str(info.value)
    endpoint.refuse = False
    assert await p.token() == "at-0"
    assert p.needs_reauth is None


async def test_other_refusals_are_not_taken_for_a_revoked_grant() -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": "temporarily_unavailable"}, status=503)

    app = web.Application()
    app.router.add_post("/token", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        p = TokenProvider(f"http://127.0.0.1:{runner.addresses[0][1]}/token", "cid", REFRESH)
        with pytest.raises(OAuthError) as info:
            await p.token()
        assert not isinstance(info.value, OAuthGrantRevoked)
        assert p.needs_reauth is None
    finally:
        await runner.cleanup()


async def test_announced_refresh_token_expiry_warns_inside_the_window(
    endpoint: TokenEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    wall = Clock()
    endpoint.rt_expires_in = 7 * 86400  # Google, app in testing mode
    p = TokenProvider(endpoint.url, "cid", REFRESH, wall=wall, warn_before=2 * 86400)
    with caplog.at_level("WARNING", logger="bridge.poller.oauth"):
        await p.token()
    assert p.refresh_token_expires_at == wall.now + 7 * 86400
    assert p.refresh_token_left() == 7 * 86400
    assert not [r for r in caplog.records if "expires in" in r.getMessage()]
    # Six days later the provider still counts from the original grant.
    wall.now += 6 * 86400
    endpoint.rt_expires_in = 86400
    p.invalidate()
    with caplog.at_level("WARNING", logger="bridge.poller.oauth"):
        await p.token()
    warnings = [r.getMessage() for r in caplog.records if "expires in" in r.getMessage()]
    assert warnings and "1.0 days" in warnings[0]
    assert REFRESH not in " ".join(warnings)


async def test_scheduler_parks_a_revoked_account_and_resumes_on_a_new_grant(
    endpoint: TokenEndpoint, store: Store
) -> None:
    from types import SimpleNamespace

    from bridge.ops import metrics
    from bridge.poller.build import account_spec
    from bridge.poller.observe import Observer
    from bridge.poller.scheduler import Scheduler

    endpoint.refuse = True
    providers: dict[str, TokenProvider] = {}

    def model(refresh: str) -> SimpleNamespace:
        oauth = SimpleNamespace(
            token_url=endpoint.url, client_id="cid", refresh_token=refresh, scope=None
        )
        return SimpleNamespace(
            name="revoked", host="127.0.0.1", port=server.port, tls="none",
            username="me@example.com", auth="xoauth2", allow_plaintext=True,
            poll_interval=0.05, on_delivered="keep", initial="all",
            max_message_size=1 << 20, webhook="main", oauth2=oauth,
        )  # fmt: skip

    current = {"refresh": REFRESH}
    rounds = [0]  # the scheduler asks for the accounts once per round (refresh=0.05)

    async def accounts() -> list[AccountSpec]:
        rounds[0] += 1
        return [account_spec(model(current["refresh"]), None, providers)]

    def states() -> dict[str, tuple[str | None, float | None]]:
        return {n: (p.needs_reauth, p.refresh_token_expires_at) for n, p in providers.items()}

    observer = Observer(store, oauth=states)
    async with oauth_pop3(valid={"at-0"}) as server:
        sched = Scheduler(store, accounts, jitter=0.0, refresh=0.05, on_report=observer.on_poll)
        stop = asyncio.Event()
        task = asyncio.create_task(sched.run(stop, grace=1.0))
        try:
            await wait_until(lambda: endpoint.forms)
            # Ten scheduler rounds (many poll intervals) later the token endpoint has still
            # been asked only once: the account is parked, not backing off and retrying.
            seen = rounds[0]
            await wait_until(lambda: rounds[0] >= seen + 10)
            assert len(endpoint.forms) == 1
            status = await observer.status()
            assert "consent flow" in (status["accounts"]["revoked"]["needs_reauth"] or "")
            gauge = metrics.ACCOUNT_NEEDS_REAUTH.labels(account="revoked")._value.get()
            assert gauge == 1
            # The operator puts a new refresh token in place: the account comes back.
            endpoint.refuse = False
            endpoint.rotate_to = "rt-new"
            current["refresh"] = "rt-new"
            await wait_until(lambda: server.bearer_logins)
            assert server.bearer_logins[0] == ("XOAUTH2", "at-0", True)
            status = await observer.status()
            assert status["accounts"]["revoked"]["needs_reauth"] is None
            assert metrics.ACCOUNT_NEEDS_REAUTH.labels(account="revoked")._value.get() == 0
        finally:
            stop.set()
            await task

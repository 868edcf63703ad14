"""The poller's metrics as an operator reads them (`bridge.poller.observe`)."""

from __future__ import annotations

import pytest

from bridge.ops.metrics import REGISTRY
from bridge.poller.observe import Observer
from bridge.poller.poll import poll_account
from bridge.pop3.errors import AuthenticationFailed
from bridge.store import Store
from bridge.testing.fakepop3 import FakePOP3Server, Faults
from tests.support.accounts import fake_account


def failures(account: str, reason: str) -> float:
    labels = {"account": account, "reason": reason}
    return REGISTRY.get_sample_value("pop3bridge_login_failures_total", labels) or 0.0


async def failed_poll(store: Store, name: str, faults: Faults, password: str) -> list[str]:
    """Poll a fake server that fails the login as `faults` say, and report it."""
    async with FakePOP3Server([], faults=faults) as server:
        spec = fake_account(server, name, auth="user", password=password)
        with pytest.raises(AuthenticationFailed) as caught:
            await poll_account(spec, store)
        verbs = [verb for info in server.connections for verb, _ in info.commands]
    Observer(store).on_poll(spec, None, caught.value)
    return verbs


async def test_a_connection_dropped_during_login_has_its_own_reason(store: Store) -> None:
    before = {r: failures("dropped-acct", r) for r in ("auth", "dropped")}
    # The server answers USER, then closes without a word about PASS.
    verbs = await failed_poll(
        store, "dropped-acct", Faults(close_after_commands=2), password="password"
    )
    assert verbs[-1] == "USER"  # PASS went out; no answer came
    assert failures("dropped-acct", "dropped") == before["dropped"] + 1
    assert failures("dropped-acct", "auth") == before["auth"]


async def test_refused_credentials_stay_auth(store: Store) -> None:
    before = {r: failures("refused-acct", r) for r in ("auth", "dropped")}
    await failed_poll(store, "refused-acct", Faults(), password="wrong")
    assert failures("refused-acct", "auth") == before["auth"] + 1
    # A server that answers -ERR and then hangs up has refused them in words: still auth.
    await failed_poll(store, "refused-acct", Faults(hang_up_on_refused_login=True), "wrong")
    assert failures("refused-acct", "auth") == before["auth"] + 2
    assert failures("refused-acct", "dropped") == before["dropped"]

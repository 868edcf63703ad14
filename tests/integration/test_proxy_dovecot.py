"""The proxy in front of a real Dovecot: real clients get through it what they get directly."""

from __future__ import annotations

import pytest

from bridge.testing.samples import generate_messages
from tests.integration.proxy_support import fetch_all, fixed_config, in_thread, running_proxy

pytestmark = pytest.mark.dovecot


async def test_poplib_through_fixed_upstream_matches_direct(dovecot, dovecot_user) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(3))
    direct = await in_thread(
        fetch_all, dovecot.host, dovecot.pop3_port, dovecot_user.name, dovecot_user.password
    )
    async with running_proxy(fixed_config(dovecot)) as proxy:
        host, port = proxy.addresses["plain"]
        through = await in_thread(fetch_all, host, port, dovecot_user.name, dovecot_user.password)
    assert through == direct
    assert len(direct["messages"]) == 3

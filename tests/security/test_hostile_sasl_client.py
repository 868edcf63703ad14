"""Issue 19, finding 5: a SASL response of 64 KiB or more deadlocked a proxy session.

The relay stopped reading the client once 64 KiB were waiting, and the reader refused a SASL
line only past 64 KiB: it waited for a line end it would never read, and the client's close
went unseen (CLOSE-WAIT, an upstream connection held for minutes). Now the client gets
`-ERR` and the session closes. Driven as the session drives it: client bytes are handed over
only while `wants_client_data()`.
"""

from __future__ import annotations

import pytest

from bridge.config import ProxyPolicy
from bridge.pop3.wire import ResponseFramer
from bridge.proxy.handler import ProxySession
from bridge.proxy.policy import Policy
from bridge.proxy.relay import Actions, Relay
from bridge.proxy.routing import policy_rules


def relay(routing: bool) -> Relay:
    policy = Policy(policy_rules(ProxyPolicy()))
    if routing:
        return Relay(session=ProxySession(policy), upstream=None)
    return Relay(
        session=ProxySession(policy),
        upstream=ResponseFramer(line_ending="crlf", expect_greeting=False),
        offer_stls=True,
    )


def flood(r: Relay, total: int) -> tuple[Actions, int]:
    """Send `total` octets of one endless base64 line, as long as the relay reads them."""
    out = Actions()
    sent = 0
    while sent < total and r.wants_client_data():
        r.client_data(b"QUFB" * 1024)
        sent += 4096
        step = r.take()
        out.to_client += step.to_client
        out.to_upstream += step.to_upstream
        out.close = out.close or step.close
    return out, sent


@pytest.mark.parametrize("routing", [False, True], ids=["fixed upstream", "routing login"])
def test_an_endless_sasl_response_is_refused_and_the_session_closed(routing: bool) -> None:
    r = relay(routing)
    r.client_data(b"AUTH PLAIN\r\n")
    if not routing:
        assert r.take().to_upstream == [b"AUTH PLAIN\r\n"]
        r.upstream_data(b"+ \r\n")
    taken = r.take()
    assert any(line.startswith(b"+") for line in taken.to_client)
    out, sent = flood(r, 1 << 20)
    assert out.close is not None, f"stuck after {sent} octets: neither reading nor closing"
    assert out.to_client and out.to_client[-1].startswith(b"-ERR")
    assert sent <= 200 * 1024
    assert not any(b"QUFB" in chunk for chunk in out.to_upstream)  # nothing half-forwarded


def test_a_long_but_legal_sasl_response_still_passes() -> None:
    r = relay(False)
    r.client_data(b"AUTH XOAUTH2\r\n")
    r.take()
    r.upstream_data(b"+ \r\n")
    r.take()
    token = b"QUFB" * 8000 + b"\r\n"  # 32 KiB: long OAuth tokens exist
    r.client_data(token)
    assert r.take().to_upstream == [token]

"""TLS: certificates are verified by default; a configured CA file makes a private CA work."""

from __future__ import annotations

import orjson

from bridge.delivery.sender import WebhookSender
from tests.delivery.conftest import target_for
from tests.support.certs import TestCerts
from tests.support.receiver import WebhookReceiver

BODY = orjson.dumps({"n": 1})


async def test_verified_with_the_configured_ca(
    tls_receiver: WebhookReceiver, sender: WebhookSender, tls_certs: TestCerts
) -> None:
    assert tls_receiver.url.startswith("https://")
    result = await sender.send(target_for(tls_receiver, ca_file=tls_certs.ca_file), "msg_tls", BODY)
    assert result.ok, result.error
    assert tls_receiver.invalid == 0 and tls_receiver.unique_ids == {"msg_tls"}


async def test_refused_without_the_ca(tls_receiver: WebhookReceiver, sender: WebhookSender) -> None:
    # Default trust store: the test CA is unknown there, so the handshake must fail.
    result = await sender.send(target_for(tls_receiver), "msg_tls", BODY)
    assert not result.ok and result.status is None and not result.permanent
    assert result.error is not None and "certificate" in result.error
    assert "ca_file" in result.error  # says how to fix it
    assert tls_receiver.requests == []  # nothing was sent over the unverified channel


async def test_refused_with_an_unrelated_ca(
    tls_receiver: WebhookReceiver, sender: WebhookSender, tls_certs: TestCerts
) -> None:
    result = await sender.send(
        target_for(tls_receiver, ca_file=tls_certs.other_ca_file), "msg_tls", BODY
    )
    assert not result.ok and result.error is not None and "certificate" in result.error
    assert tls_receiver.requests == []


async def test_verification_can_be_switched_off_explicitly(
    tls_receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    result = await sender.send(target_for(tls_receiver, verify_tls=False), "msg_tls", BODY)
    assert result.ok

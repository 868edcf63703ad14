"""TLS: certificates are verified by default; a configured CA file makes a private CA work."""

from __future__ import annotations

import asyncio
import os
import sys

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


# A fresh interpreter: aiohttp imported through bridge.delivery.client has read no CA yet.
_SYSTEM_TRUST = r"""
import asyncio, sys
from bridge.delivery.sender import WebhookSender, WebhookTarget
from aiohttp import connector

def cas():
    return connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"]

async def main(url, secret):
    assert cas() == 0, "aiohttp's import read the trust store"
    WebhookTarget(name="plain", url=url.replace("https:", "http:"), secrets=(secret,))
    assert cas() == 0, "an http:// webhook read the trust store"
    target = WebhookTarget(name="tls", url=url, secrets=(secret,))  # system trust, verified
    assert cas() > 0, "an https:// webhook did not read the trust store"
    async with WebhookSender() as sender:
        result = await sender.send(target, "msg_system_trust", b"{}")
    assert result.ok, result.error

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_the_system_trust_store_is_read_before_the_first_https_request(
    tls_receiver: WebhookReceiver, tls_certs: TestCerts
) -> None:
    # The test CA stands in for the system's trust store (SSL_CERT_FILE is OpenSSL's own
    # variable): reading it late must still verify, and verify against it.
    env = {**os.environ, "SSL_CERT_FILE": str(tls_certs.ca_file), "SSL_CERT_DIR": "/nonexistent"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SYSTEM_TRUST,
        tls_receiver.url,
        tls_receiver.secret,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert tls_receiver.unique_ids == {"msg_system_trust"}

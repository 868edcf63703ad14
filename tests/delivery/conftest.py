"""Delivery fixtures: a live signature-checking receiver (plain and TLS) and an open sender."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bridge.delivery.sender import WebhookSender, WebhookTarget
from tests.support.certs import TestCerts
from tests.support.receiver import WebhookReceiver


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as rx:
        yield rx


@pytest.fixture
async def tls_receiver(tls_certs: TestCerts) -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(ssl_context=tls_certs.server_context()) as rx:
        yield rx


@pytest.fixture
async def sender() -> AsyncIterator[WebhookSender]:
    # Quick in-process retries stay on (the default path) but short, to keep tests fast.
    async with WebhookSender(limit=32, connect_retry_wait=0.05) as s:
        yield s


def target_for(rx: WebhookReceiver, **overrides: object) -> WebhookTarget:
    values: dict[str, object] = {
        "name": "test",
        "url": rx.url,
        "secrets": (rx.secret,),
        "timeout": 5.0,
    }
    values.update(overrides)
    return WebhookTarget(**values)  # type: ignore[arg-type]

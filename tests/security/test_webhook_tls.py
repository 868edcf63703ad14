"""The webhook side of TLS verification, beyond tests/delivery/test_tls.py (unknown CA): a
receiver whose certificate names another host, or has expired, is refused even with the right
CA file, and nothing is sent over the unverified channel."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import trustme

from bridge.delivery.sender import WebhookSender, WebhookTarget
from tests.support.receiver import WebhookReceiver

BODY = orjson.dumps({"n": 1})


def context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    return ctx


@pytest.fixture
async def sender() -> AsyncIterator[WebhookSender]:
    async with WebhookSender(limit=4, connect_retry_wait=0.05) as s:
        yield s


@pytest.mark.parametrize(
    ("case", "hint"), [("wrong host", "mismatch"), ("expired", "expired"), ("good", None)]
)
async def test_receiver_certificate_is_checked(
    tmp_path: Path, sender: WebhookSender, case: str, hint: str | None
) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = {
        "good": lambda: ca.issue_cert("127.0.0.1"),
        "wrong host": lambda: ca.issue_cert("hooks.elsewhere.example"),
        "expired": lambda: ca.issue_cert(
            "127.0.0.1",
            not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
            not_after=dt.datetime(2020, 6, 1, tzinfo=dt.UTC),
        ),
    }[case]()
    async with WebhookReceiver(ssl_context=context(leaf)) as rx:
        target = WebhookTarget("t", rx.url, (rx.secret,), timeout=5.0, ca_file=ca_file)
        result = await sender.send(target, "msg_tls", BODY)
        if hint is None:  # the control: same setup, valid certificate
            assert result.ok, result.error
            assert rx.unique_ids == {"msg_tls"}
            return
        assert not result.ok and result.status is None
        assert result.error is not None and hint in result.error.lower(), result.error
        assert rx.requests == []

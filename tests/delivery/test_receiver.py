"""The test receiver itself: it must catch bad signatures, or the other tests prove nothing."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from bridge.delivery.sender import WebhookSender
from bridge.delivery.signing import sign
from tests.delivery.conftest import target_for
from tests.support.receiver import ThreadedReceiver, WebhookReceiver, new_secret


async def test_tampered_body_and_missing_headers_are_401_and_counted(
    receiver: WebhookReceiver,
) -> None:
    ts = int(time.time())
    good = sign([receiver.secret], "msg_t", ts, b'{"a":1}')
    base = {"webhook-id": "msg_t", "webhook-timestamp": str(ts), "webhook-signature": good}
    async with aiohttp.ClientSession() as http:
        async with http.post(receiver.url, data=b'{"a":2}', headers=base) as resp:
            assert resp.status == 401
        async with http.post(receiver.url, data=b'{"a":1}') as resp:
            assert resp.status == 401
        async with http.post(receiver.url, data=b'{"a":1}', headers=base) as resp:
            assert resp.status == 204
    assert receiver.invalid == 2 and len(receiver.delivered) == 1


async def test_stale_timestamp_is_rejected_so_send_time_matters(receiver: WebhookReceiver) -> None:
    # A sender that stamped the time the message was *queued* would fail after 5 minutes.
    async with WebhookSender(clock=lambda: time.time() - 600) as stale:
        result = await stale.send(target_for(receiver), "msg_old", b"{}")
    assert result.status == 401 and receiver.invalid == 1


async def test_script_is_consumed_in_order_then_default(receiver: WebhookReceiver) -> None:
    receiver.script(500, 503)
    async with WebhookSender() as sender:
        statuses = [(await sender.send(target_for(receiver), "m", b"{}")).status for _ in range(3)]
    assert statuses == [500, 503, 204]
    assert receiver.ids == {"m": 3} and receiver.duplicates == 2


def test_threaded_receiver_for_blocking_tests() -> None:
    secret = new_secret()
    with ThreadedReceiver(secrets=[secret]) as rx:
        rx.fail_next(1, status=502)

        async def deliver(n: int) -> list[int | None]:
            async with WebhookSender() as sender:
                assert rx.receiver is not None
                target = target_for(rx.receiver)
                return [(await sender.send(target, f"msg_{i}", b"{}")).status for i in range(n)]

        assert asyncio.run(deliver(2)) == [502, 204]
        rx.wait_for(2)
        port = rx.port
        rx.stop()
        assert asyncio.run(deliver(1)) == [None]
        rx.start()
        assert rx.port == port
        assert asyncio.run(deliver(1)) == [204]
        assert rx.invalid == 0 and rx.ids["msg_0"] == 2


async def test_wait_quiet_returns_once_the_client_has_hung_up(receiver: WebhookReceiver) -> None:
    ts = int(time.time())
    headers = {
        "webhook-id": "msg_q",
        "webhook-timestamp": str(ts),
        "webhook-signature": sign([receiver.secret], "msg_q", ts, b"{}"),
    }
    http = aiohttp.ClientSession()  # keep-alive: the connection stays open after the answer
    async with http.post(receiver.url, data=b"{}", headers=headers) as resp:
        assert resp.status == 204
    assert receiver.open_connections == 1
    with pytest.raises(AssertionError, match="1 connection"):
        await receiver.wait_quiet(timeout=0.3)
    await http.close()
    await receiver.wait_quiet()
    assert receiver.open_connections == 0

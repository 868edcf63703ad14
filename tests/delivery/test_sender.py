"""The sender against a real aiohttp receiver that verifies with the reference library."""

from __future__ import annotations

import logging
import socket
import time

import orjson
import pytest

from bridge.delivery.sender import DeliveryError, WebhookSender, WebhookTarget
from tests.delivery.conftest import target_for
from tests.support.receiver import Reply, WebhookReceiver, new_secret

BODY = orjson.dumps({"type": "message.received", "data": {"id": "msg_1", "subject": "hi"}})


async def test_2xx_is_delivered_and_verified(
    receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    result = await sender.send(target_for(receiver), "msg_1", BODY)
    assert result.ok and result.status == 204 and result.error is None
    assert not result.permanent and result.latency > 0
    assert receiver.invalid == 0
    [got] = receiver.delivered
    assert got.body == BODY  # byte for byte, never re-encoded
    assert got.json == orjson.loads(BODY)
    assert got.msg_id == "msg_1"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60


@pytest.mark.parametrize("status", [200, 201, 202, 299])
async def test_any_2xx_is_success(
    receiver: WebhookReceiver, sender: WebhookSender, status: int
) -> None:
    receiver.script(status)
    result = await sender.send(target_for(receiver), "msg_ok", BODY)
    assert result.ok and result.status == status


async def test_500_is_transient_with_the_body_in_the_error(
    receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    receiver.script(Reply(500, body=b"database\nunavailable"))
    result = await sender.send(target_for(receiver), "msg_1", BODY)
    assert not result.ok and result.status == 500 and not result.permanent
    assert result.error is not None
    assert "HTTP 500" in result.error and "database unavailable" in result.error


@pytest.mark.parametrize("status", [408, 409, 425, 502, 503])
async def test_retryable_statuses_are_not_permanent(
    receiver: WebhookReceiver, sender: WebhookSender, status: int
) -> None:
    receiver.script(status)
    result = await sender.send(target_for(receiver), "msg_1", BODY)
    assert (result.ok, result.status, result.permanent) == (False, status, False)


@pytest.mark.parametrize("status", [400, 404, 410, 413, 422])
async def test_other_4xx_are_permanent(
    receiver: WebhookReceiver, sender: WebhookSender, status: int
) -> None:
    receiver.script(status)
    result = await sender.send(target_for(receiver), "msg_1", BODY)
    assert (result.ok, result.status, result.permanent) == (False, status, True)


async def test_429_retry_after_seconds(receiver: WebhookReceiver, sender: WebhookSender) -> None:
    receiver.script(Reply(429, retry_after="37"))
    result = await sender.send(target_for(receiver), "msg_1", BODY)
    assert result.status == 429 and result.retry_after == 37.0 and not result.permanent


async def test_503_retry_after_http_date(receiver: WebhookReceiver, sender: WebhookSender) -> None:
    import email.utils

    receiver.script(Reply(503, retry_after=email.utils.formatdate(time.time() + 120, usegmt=True)))
    result = await sender.send(target_for(receiver), "msg_1", BODY)
    assert result.status == 503
    assert result.retry_after is not None and 110 <= result.retry_after <= 121


async def test_redirect_is_not_followed(receiver: WebhookReceiver, sender: WebhookSender) -> None:
    receiver.script(Reply(307, headers={"Location": "http://127.0.0.1:1/elsewhere"}))
    result = await sender.send(target_for(receiver), "msg_1", BODY)
    assert not result.ok and result.status == 307
    assert result.error is not None and "redirect" in result.error
    assert len(receiver.requests) == 1


async def test_timeout_is_transient(receiver: WebhookReceiver, sender: WebhookSender) -> None:
    receiver.script(Reply(delay=3.0))
    result = await sender.send(target_for(receiver, timeout=0.3), "msg_1", BODY)
    assert not result.ok and result.status is None and not result.permanent
    assert result.error == "no response within 0.3s"
    assert result.latency < 3.0  # gave up at the timeout, not when the receiver answered


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    target = WebhookTarget("down", f"http://127.0.0.1:{port}/hook", (new_secret(),), 2.0)
    async with WebhookSender(connect_retries=2, connect_retry_wait=0.05) as sender:
        result = await sender.send(target, "msg_1", BODY)
    assert not result.ok and result.status is None and not result.permanent
    assert result.error is not None
    assert f"cannot connect to http://127.0.0.1:{port}" in result.error


async def test_reset_is_retried_quickly_then_reported(
    receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    receiver.script(*(Reply(reset=True) for _ in range(3)))
    result = await sender.send(target_for(receiver), "msg_1", BODY)
    assert not result.ok and result.status is None and not result.permanent
    assert result.error is not None and "reset" in result.error.lower()
    assert len(receiver.requests) == 3  # 1 try + connect_retries (2)


async def test_one_reset_is_absorbed_with_a_fresh_signature(receiver: WebhookReceiver) -> None:
    ticks = iter(range(10_000))

    def clock() -> float:
        # Each attempt must be stamped when it is SENT: 7 s apart per clock read here.
        return time.time() - 120 + 7 * next(ticks)

    receiver.script(Reply(reset=True))
    async with WebhookSender(clock=clock, connect_retry_wait=0.05) as sender:
        result = await sender.send(target_for(receiver), "msg_1", BODY)
    assert result.ok
    first, second = receiver.requests
    assert first.msg_id == second.msg_id == "msg_1"
    assert first.headers["webhook-timestamp"] != second.headers["webhook-timestamp"]
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    assert receiver.invalid == 0 and receiver.duplicates == 1


async def test_receiver_down_then_back_on_the_same_port(
    receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    target = target_for(receiver)
    assert (await sender.send(target, "msg_1", BODY)).ok
    await receiver.stop()
    down = await sender.send(target, "msg_2", BODY)
    assert not down.ok and down.status is None and not down.permanent
    await receiver.start()
    up = await sender.send(target, "msg_2", BODY)
    assert up.ok
    assert receiver.unique_ids == {"msg_1", "msg_2"}


async def test_headers_sent_and_reserved_ones_not_overridable(
    receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    target = target_for(
        receiver,
        headers={
            "Authorization": "Bearer abc123token",
            "X-Tenant": "t1",
            "Webhook-Id": "forged",
            "webhook-signature": "v1,forged",
        },
    )
    assert (await sender.send(target, "msg_h", BODY)).ok
    [got] = receiver.delivered
    assert got.headers["authorization"] == "Bearer abc123token"
    assert got.headers["x-tenant"] == "t1"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == "msg_h"
    assert "forged" not in got.headers["webhook-signature"]


async def test_wrong_secret_is_401_and_recorded_invalid(
    receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    result = await sender.send(target_for(receiver, secrets=(new_secret(),)), "msg_x", BODY)
    assert result.status == 401 and result.permanent
    assert receiver.invalid == 1 and receiver.delivered == []


async def test_rotation_list_verifies_at_a_receiver_with_only_one_secret(
    sender: WebhookSender,
) -> None:
    old, new = new_secret(), new_secret()
    for known in (old, new):
        async with WebhookReceiver(secrets=[known]) as rx:
            assert (await sender.send(target_for(rx, secrets=(old, new)), "msg_r", BODY)).ok
            assert rx.invalid == 0 and len(rx.delivered) == 1


async def test_secrets_never_in_errors_repr_or_logs(
    receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    secret = receiver.secret
    token = "tok-" + new_secret()[6:30]
    target = target_for(
        receiver,
        url=receiver.url + "?key=querysecret123",
        headers={"Authorization": f"Bearer {token}"},
    )
    caplog.set_level(logging.DEBUG)
    # The receiver echoes secrets back in its error body; resets exercise the retry logging.
    receiver.script(
        Reply(500, body=f"bad auth {token} {secret} querysecret123".encode()),
        Reply(reset=True),
        Reply(reset=True),
        Reply(reset=True),
    )
    async with WebhookSender(connect_retry_wait=0.05) as sender:
        results = [await sender.send(target, "msg_s", BODY) for _ in range(2)]
        await receiver.stop()
        results.append(await sender.send(target, "msg_s", BODY))
    errors = [r.error or "" for r in results]
    assert all(errors) and "[redacted]" in errors[0]
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert caplog.records, "the quick retries should have logged at DEBUG"
    for text in (*errors, logged, repr(target)):
        for s in (secret, secret[6:], token, "querysecret123"):
            assert s not in text


async def test_target_config_errors_are_clear_and_secret_free(tmp_path: object) -> None:
    secret = new_secret()
    with pytest.raises(ValueError, match="http:// or https://"):
        WebhookTarget("w", "ftp://example.test/x", (secret,))
    with pytest.raises(ValueError, match="ca_file") as info:
        WebhookTarget("w", "https://example.test/x", (secret,), ca_file="/nonexistent/ca.pem")
    assert secret not in str(info.value)
    with pytest.raises(ValueError, match="timeout"):
        WebhookTarget("w", "https://example.test/x", (secret,), timeout=0)


async def test_send_outside_context_is_a_usage_error(receiver: WebhookReceiver) -> None:
    sender = WebhookSender()
    with pytest.raises(DeliveryError, match="async with"):
        await sender.send(target_for(receiver), "msg_1", BODY)


@pytest.mark.parametrize(
    "headers",
    [{"X-A": "ok\r\nX-Injected: 1"}, {"Bad Name": "v"}, {"X-B": "line\nbreak"}],
)
def test_header_injection_is_a_config_error(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="extra header"):
        WebhookTarget("w", "https://example.test/x", (new_secret(),), headers=headers)


async def test_the_first_200_bytes_of_every_answer_are_kept_for_the_custody_trail(
    receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    receiver.script(Reply(200, body=b'{"ticket": 4711}' + b"x" * 500))
    ok = await sender.send(target_for(receiver), "msg_1", BODY)
    assert ok.ok and ok.response_head is not None
    assert ok.response_head.startswith('{"ticket": 4711}') and len(ok.response_head) == 200
    receiver.script(Reply(503, body=b"busy"))
    busy = await sender.send(target_for(receiver), "msg_2", BODY)
    assert busy.response_head == "busy"
    receiver.script(204)
    empty = await sender.send(target_for(receiver), "msg_3", BODY)
    assert empty.response_head is None


async def test_answers_come_back_uncompressed_for_errors_and_the_trail(
    sender: WebhookSender,
) -> None:
    """The sender does not decompress answers, so it asks for none: a receiver that would
    gzip its error page (aiohttp's server does when the client accepts gzip) sends it plain,
    and the error and the custody trail's response head stay readable."""
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        reply = web.Response(status=503, text="queue full, " * 40)
        reply.enable_compression()
        return reply

    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        target = WebhookTarget(
            name="gz", url=f"http://127.0.0.1:{port}/hook", secrets=(new_secret(),)
        )
        result = await sender.send(target, "msg_gz", BODY)
    finally:
        await runner.cleanup()
    assert result.status == 503 and result.error is not None
    assert "queue full, queue full" in result.error
    assert result.response_head is not None and result.response_head.startswith("queue full")

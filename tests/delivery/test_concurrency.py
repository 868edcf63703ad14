"""Many tasks share one sender: all deliveries succeed over a bounded, reused connection pool."""

from __future__ import annotations

import asyncio

import orjson

from bridge.delivery.policy import RetryPolicy
from bridge.delivery.sender import WebhookSender
from tests.delivery.conftest import target_for
from tests.support.receiver import Reply, WebhookReceiver


async def test_200_concurrent_sends_through_one_sender(receiver: WebhookReceiver) -> None:
    target = target_for(receiver)
    bodies = {f"msg_{i:04d}": orjson.dumps({"i": i, "pad": "x" * (i % 50)}) for i in range(200)}
    async with WebhookSender(limit=10) as sender:
        results = await asyncio.gather(
            *(sender.send(target, msg_id, body) for msg_id, body in bodies.items())
        )
        # A second wave reuses the pooled keep-alive connections.
        again = await asyncio.gather(*(sender.send(target, f"again_{i}", b"{}") for i in range(50)))
    assert all(r.ok for r in [*results, *again]), [r.error for r in results if not r.ok][:3]
    assert receiver.invalid == 0 and receiver.duplicates == 0
    assert receiver.unique_ids == set(bodies) | {f"again_{i}" for i in range(50)}
    assert {r.msg_id: r.body for r in receiver.delivered if r.msg_id in bodies} == bodies
    # 250 requests over at most `limit` connections: the session pools and reuses them.
    assert 1 <= receiver.connections <= 10


async def test_sender_and_policy_glue_same_id_until_delivered(receiver: WebhookReceiver) -> None:
    """What the worker does, with a virtual clock: the webhook-id stays stable across retries."""
    receiver.script(500, Reply(429, retry_after="30"), 503, 409)
    policy = RetryPolicy(max_attempts=10)
    target = target_for(receiver)
    now, attempts, schedule = 0.0, 0, []
    async with WebhookSender() as sender:
        while True:
            result = await sender.send(target, "msg_glue", b'{"a":1}')
            attempts += 1
            if result.ok:
                break
            when = policy.next_attempt(attempts, result, now)
            assert when is not None
            schedule.append(when - now)
            now = when
    assert attempts == 5
    assert schedule[1] == 30.0  # Retry-After on the 429 replaced the jitter
    assert receiver.ids == {"msg_glue": 5} and len(receiver.delivered) == 1
    assert receiver.invalid == 0

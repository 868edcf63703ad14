"""The proxy tap against a real receiver (signatures checked by `standardwebhooks`) and SQLite.

The relay's side of the contract is simulated by calling `begin`/`feed`/`finish`/`abort` the way
it does: dot-unstuffed message bytes in chunks, `finish` after the terminating line.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Settings
from bridge.mail import fingerprint
from bridge.ops.metrics import REGISTRY
from bridge.outbox import current_pool
from bridge.proxy.tap import HEADER_LIMIT, Tap, TapTarget, build_tap, tap_account
from bridge.store import open_store
from bridge.testing.samples import big_message, generate_messages
from tests.mail.mail_schema_check import VALIDATOR
from tests.support.receiver import WebhookReceiver

ROUTE = "*@example.org"


@pytest.fixture
async def rx() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as receiver:
        yield receiver


def settings_for(tmp_path: Path, rx: WebhookReceiver, **tap: Any) -> Settings:
    return Settings.model_validate(
        {
            "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
            "webhooks": [
                # Short back-off so "retried later" happens within the test.
                {"name": "copies", "url": rx.url, "secret": rx.secret, "retry_max_delay": 0.2}
            ],
            "proxy": {
                "routes": [
                    {
                        "match": ROUTE,
                        "upstream": {"host": "127.0.0.1", "port": 110, "tls": "none"},
                        "tap": {"webhook": "copies", **tap},
                    },
                    {"match": "*", "upstream": {"host": "127.0.0.1", "port": 110, "tls": "none"}},
                ]
            },
        }
    )


def retr(tap: Tap, raw: bytes, *, user: str = "ann@example.org", msgno: int = 1, step: int = 997):
    capture = tap.begin(user=user, route=ROUTE, listener="pop3", msgno=msgno)
    assert capture is not None
    for at in range(0, len(raw), step):
        capture.feed(raw[at : at + step])
    capture.finish()
    return capture


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def settle(tap: Tap, recorded: int) -> None:
    async with asyncio.timeout(10):
        while tap.recorded < recorded:
            await asyncio.sleep(0.01)


async def test_a_retrieved_message_arrives_once_with_source_proxy(
    tmp_path: Path, rx: WebhookReceiver
) -> None:
    raw = generate_messages(3, seed=7)[2]  # multipart with an attachment
    before = metric("pop3bridge_proxy_tap_messages_total", listener="pop3", outcome="recorded")
    async with build_tap(settings_for(tmp_path, rx), grace=5) as tap:
        assert tap is not None
        assert tap.begin(user="bob@other.net", route="*", listener="pop3", msgno=1) is None
        retr(tap, raw)
        await rx.wait_for(1)
        # The same client fetches it again (and in another session): same row, no new webhook.
        retr(tap, raw, msgno=1, step=64)
        await settle(tap, 2)
    # No waiting needed to see that nothing more is sent: the second copy is in the store once
    # `settle` returns, and closing the tap finishes every send in flight, so a second row would
    # show below as a pending row or as a second webhook.
    assert rx.invalid == 0
    assert len(rx.verified) == 1 and rx.duplicates == 0
    body = rx.verified[0].json
    VALIDATOR.validate(body)
    data = body["data"]
    assert data["source"] == "proxy"
    assert data["account"] == tap_account(ROUTE, "ann@example.org")
    assert data["size"] == len(raw)
    assert data["id"] == rx.verified[0].msg_id
    assert data["attachments"] and data["parse_errors"] == []
    assert data["message_id"] and data["message_id"] in raw.decode("latin-1")
    after = metric("pop3bridge_proxy_tap_messages_total", listener="pop3", outcome="recorded")
    assert after - before == 2  # both fetches recorded; the store kept one row
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        assert await store.pending_count() == 0
        assert await store.known_fingerprints(data["account"], {fingerprint(raw)}) == {
            fingerprint(raw)
        }
    finally:
        await store.close()


async def test_receiver_down_the_copy_is_retried_later_not_lost(
    tmp_path: Path, rx: WebhookReceiver
) -> None:
    raw = generate_messages(1, seed=11)[0]
    retries = metric("pop3bridge_deliveries_total", outcome="retry", status_class="none")
    await rx.stop()
    async with build_tap(settings_for(tmp_path, rx), grace=5) as tap:
        assert tap is not None
        retr(tap, raw, user="cy@example.org")
        async with asyncio.timeout(10):  # at least one attempt failed against the closed port
            while metric("pop3bridge_deliveries_total", outcome="retry", status_class="none") < (
                retries + 1
            ):
                await asyncio.sleep(0.02)
        assert rx.requests == []
        await rx.start()  # same port
        await rx.wait_for(1)
    assert rx.invalid == 0 and len(rx.verified) == 1
    assert rx.verified[0].json["data"]["account"] == tap_account(ROUTE, "cy@example.org")


async def test_receiver_down_at_shutdown_the_row_stays_in_the_outbox(
    tmp_path: Path, rx: WebhookReceiver
) -> None:
    raw = generate_messages(1, seed=12)[0]
    await rx.stop()
    async with build_tap(settings_for(tmp_path, rx), grace=1) as tap:
        assert tap is not None
        retr(tap, raw)
        await settle(tap, 1)
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        assert await store.pending_count() == 1  # delivered on the next start
    finally:
        await store.close()
    await rx.start()
    async with build_tap(settings_for(tmp_path, rx), grace=5):
        await rx.wait_for(1)
    assert len(rx.verified) == 1


async def test_oversize_message_becomes_a_metadata_only_copy(
    tmp_path: Path, rx: WebhookReceiver
) -> None:
    raw = big_message(200_000, seed=3)
    limit = 20_000
    async with build_tap(settings_for(tmp_path, rx, max_message_size=limit), grace=5) as tap:
        assert tap is not None
        capture = retr(tap, raw, step=7)  # 7-byte chunks: the blank line spans chunk edges
        assert capture.oversize and capture.size == len(raw)
        await rx.wait_for(1)
    body = rx.verified[0].json
    VALIDATOR.validate(body)
    data = body["data"]
    assert data["size"] == len(raw) and data["source"] == "proxy"
    assert any("max_message_size" in e for e in data["parse_errors"])
    assert data["attachments"] == [] and data["text"] in (None, "")
    assert data["subject"]  # headers survived
    assert data["uidl"].startswith("sha256-headers:")


@pytest.mark.parametrize("step", [1, 2, 3, 5, 4096])
async def test_oversize_keeps_exactly_the_header_block(step: int) -> None:
    head = b"From: a@example.org\r\nSubject: x\r\n\r\n"
    raw = head + b"body line\r\n" * 50
    tap = Tap({ROUTE: TapTarget("copies", max_message_size=40)}, store=None)  # type: ignore[arg-type]
    capture = tap.begin(user="u", route=ROUTE, listener="l", msgno=1)
    assert capture is not None
    for at in range(0, len(raw), step):
        capture.feed(raw[at : at + step])
    assert capture.oversize and capture.size == len(raw)
    assert bytes(capture._head) == head and capture._chunks == []


async def test_headers_are_capped_when_no_blank_line_comes() -> None:
    tap = Tap({ROUTE: TapTarget("copies", max_message_size=1000)}, store=None)  # type: ignore[arg-type]
    capture = tap.begin(user="u", route=ROUTE, listener="l", msgno=1)
    assert capture is not None
    for _ in range(1000):
        capture.feed(b"X-Junk: " + b"y" * 1000 + b"\r\n")
    assert capture.oversize and len(capture._head) == HEADER_LIMIT and capture._chunks == []


async def test_abort_sends_nothing(tmp_path: Path, rx: WebhookReceiver) -> None:
    partial, complete = generate_messages(2, seed=21)
    async with build_tap(settings_for(tmp_path, rx), grace=5) as tap:
        assert tap is not None
        capture = tap.begin(user="ann@example.org", route=ROUTE, listener="pop3", msgno=1)
        assert capture is not None
        capture.feed(partial[:500])
        capture.abort()
        capture.finish()  # a late finish after abort changes nothing
        retr(tap, complete, msgno=2)  # proves the pipeline ran after the abort
        await rx.wait_for(1)
    # Copies are recorded in order, so by the time the complete one was sent the aborted one
    # had been dropped or recorded; `recorded` and the webhooks after close say which.
    assert len(rx.verified) == 1
    assert rx.verified[0].json["data"]["size"] == len(complete)
    assert tap.recorded == 1


async def test_ten_thousand_chunks_are_cheap_and_large_parses_leave_the_loop(
    tmp_path: Path, rx: WebhookReceiver
) -> None:
    raw = big_message(10_000 * 512, seed=5)
    step = -(-len(raw) // 10_000)
    hashers: list[int] = []
    jobs: list[str] = []
    async with build_tap(settings_for(tmp_path, rx), grace=10) as tap:
        assert tap is not None
        original = tap._key

        def watched(copy: Any) -> Any:
            hashers.append(threading.get_ident())
            assert len(copy.parts) == 10_000  # not joined on the event loop either
            return original(copy)

        tap._key = watched  # type: ignore[method-assign]
        pool = current_pool()
        assert pool is not None  # the proxy's tap has the poller's parse workers
        parse = pool.run

        async def counted(job: Any) -> Any:
            jobs.append(type(job).__name__)
            return await parse(job)

        pool.run = counted  # type: ignore[method-assign]
        capture = tap.begin(user="ann@example.org", route=ROUTE, listener="pop3", msgno=9)
        assert capture is not None
        chunks = [raw[at : at + step] for at in range(0, len(raw), step)]
        assert len(chunks) == 10_000
        for i, chunk in enumerate(chunks):
            capture.feed(chunk)
            if i % 100 == 0:
                await asyncio.sleep(0)  # as the relay yields between socket reads
        # feed keeps the caller's chunks (no copying, no joining) until finish.
        assert len(capture._chunks) == 10_000 and capture._chunks[0] is chunks[0]
        capture.finish()
        assert tap.recorded == 0  # finish only queued the copy
        await rx.wait_for(1, timeout=30)
    assert hashers and hashers[0] != threading.get_ident()
    # Over DEFER_MAX, so built at once: by a parse worker process, not on this loop.
    assert jobs == ["BodyJob"]
    assert rx.verified[0].json["data"]["size"] == len(raw)


class GatedStore:
    """Holds `record` until released, to fill the hand-off queue."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.rows: list[Any] = []

    async def record(self, messages: Any, now: float) -> None:
        self.entered.set()
        await self.gate.wait()
        self.rows.extend(messages)


async def test_full_queue_counts_and_logs_never_silent(caplog: pytest.LogCaptureFixture) -> None:
    store = GatedStore()
    # The limit counts the copy being recorded too: one being recorded + two waiting.
    tap = Tap({ROUTE: TapTarget("copies")}, store, queue_items=3)  # type: ignore[arg-type]
    tap.start()
    before = metric("pop3bridge_proxy_tap_messages_total", listener="pop3", outcome="dropped")
    messages = generate_messages(4, seed=31)
    caplog.set_level(logging.ERROR, logger="bridge.proxy.tap")
    for n, raw in enumerate(messages, 1):
        retr(tap, raw, msgno=n)
        if n == 1:
            await asyncio.wait_for(store.entered.wait(), 10)
    # The first is held by the store, two wait, the fourth is dropped.
    assert tap.lost == 1
    after = metric("pop3bridge_proxy_tap_messages_total", listener="pop3", outcome="dropped")
    assert after - before == 1
    dropped = [r for r in caplog.records if "tap copy not recorded" in r.getMessage()]
    assert len(dropped) == 1 and getattr(dropped[0], "msgno", None) == 4
    assert "queue is full" in dropped[0].getMessage()
    store.gate.set()
    await tap.close(5)
    assert [m.size for m in store.rows] == [len(m) for m in messages[:3]]
    assert tap.lost == 1


async def test_close_counts_what_the_grace_period_could_not_record() -> None:
    store = GatedStore()
    tap = Tap({ROUTE: TapTarget("copies")}, store)  # type: ignore[arg-type]
    tap.start()
    for n, raw in enumerate(generate_messages(2, seed=41), 1):
        retr(tap, raw, msgno=n)
    await tap.close(0.2)
    assert tap.lost == 2 and store.rows == []
    assert tap.begin(user="u", route=ROUTE, listener="l", msgno=1) is None  # closed


async def test_no_tapped_route_builds_nothing(tmp_path: Path, rx: WebhookReceiver) -> None:
    settings = settings_for(tmp_path, rx)
    assert settings.proxy.routes is not None
    settings.proxy.routes[0].tap = None
    async with build_tap(settings) as tap:
        assert tap is None
    assert not (tmp_path / "state.db").exists()

"""Links end to end inside one process, on SQLite and PostgreSQL: a message recorded with links,
its body rendered as the worker renders it, and a real aiohttp client downloading from the
listener, including every bad input the issue names."""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest
from multidict import CIMultiDict

from bridge import mail
from bridge.attachments.server import LinkServer
from bridge.attachments.signing import RAW, link_path
from bridge.attachments.templates import LinkMinter
from bridge.outbox import DeferredPayload
from bridge.store import Store
from bridge.store.base import LINK_CHUNK, OutboxItem
from tests.attachments.support import Part, message, minter, row

LIMIT = 1024 * 1024
SMALL = Part("small.bin", "application/octet-stream", os.urandom(200 * 1024))
BIG = Part("Größe €.pdf", "application/pdf", os.urandom(6 * 1024 * 1024 + 123))
PAGE = Part("page.html", "text/html", b"<script>alert(1)</script>" * 50_000)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _record(
    store: Store,
    raw: bytes,
    links: LinkMinter,
    *,
    now: float,
    include_raw: bool = False,
    uidl: str = "u1",
    delete: bool = False,
) -> OutboxItem:
    new = row(
        raw,
        now=now,
        uidl=uidl,
        include_raw=include_raw,
        delete_after_delivery=delete,
        defer=True,
        links=links,
    )
    await store.record([new], now)
    (item,) = await store.claim_due(now, 10, "w", 60)
    return item


async def _body(item: OutboxItem, links: LinkMinter, include_raw: bool = False) -> dict[str, Any]:
    builder = DeferredPayload(attachment_inline_limit=LIMIT, include_raw=include_raw, links=links)
    body = await builder(item)
    again = await builder(item)
    assert body == again  # a retry signs the same bytes
    decoded: dict[str, Any] = orjson.loads(body)
    jsonschema.validate(decoded, mail.schema())
    return decoded


@pytest.fixture
async def served(store: Store) -> AsyncIterator[tuple[LinkServer, Clock, LinkMinter]]:
    clock = Clock(1_800_000_000.0)
    links = minter("http://127.0.0.1:1/files", ttl=3600)
    server = LinkServer(store, links.signer, "127.0.0.1", 0, sweep_interval=3600, clock=clock)
    await server.start()
    try:
        yield server, clock, links
    finally:
        await server.stop()


def _local(server: LinkServer, url: str) -> str:
    """The public URL rewritten to the listener's real address (the ingress's job)."""
    parts = urllib.parse.urlsplit(url)
    return f"{server.url}{parts.path}?{parts.query}"


async def _get(
    url: str, method: str = "GET", **headers: str
) -> tuple[int, CIMultiDict[str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers) as r,
    ):
        return r.status, CIMultiDict(r.headers), await r.read()


async def test_big_attachment_is_a_link_and_downloads_exactly(
    store: Store, served: tuple[LinkServer, Clock, LinkMinter]
) -> None:
    server, clock, links = served
    item = await _record(store, message(SMALL, BIG), links, now=clock.now)
    body = await _body(item, links)
    small, big = body["data"]["attachments"]
    assert small["content"] is not None and "url" not in small and "expires_at" not in small
    assert big["content"] is None and big["size"] == len(BIG.data) and big["sha256"] == BIG.sha256
    assert big["expires_at"] == "2027-01-15T09:00:00+00:00"  # now + 1 h, RFC 3339
    assert big["url"].startswith("http://127.0.0.1:1/files/a/" + item.msg_id + "/1?expires=")

    status, headers, data = await _get(_local(server, big["url"]))
    assert status == 200
    assert hashlib.sha256(data).hexdigest() == big["sha256"]
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Length"] == str(len(BIG.data))
    assert headers["ETag"] == f'"{BIG.sha256}"'
    assert headers["Content-Disposition"] == (
        "attachment; filename=\"Gr__e _.pdf\"; filename*=UTF-8''Gr%C3%B6%C3%9Fe%20%E2%82%AC.pdf"
    )
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "sandbox"
    assert headers["Accept-Ranges"] == "bytes"

    status, headers, data = await _get(_local(server, big["url"]), "HEAD")
    assert (status, data, headers["Content-Length"]) == (200, b"", str(len(BIG.data)))

    # A resumed download: a range across a chunk boundary, an open range, a suffix range.
    start = LINK_CHUNK - 10
    status, headers, data = await _get(
        _local(server, big["url"]), Range=f"bytes={start}-{start + 99}"
    )
    assert status == 206 and data == BIG.data[start : start + 100]
    assert headers["Content-Range"] == f"bytes {start}-{start + 99}/{len(BIG.data)}"
    status, _, data = await _get(_local(server, big["url"]), Range="bytes=5000000-")
    assert status == 206 and data == BIG.data[5000000:]
    status, _, data = await _get(_local(server, big["url"]), Range="bytes=-7")
    assert status == 206 and data == BIG.data[-7:]
    status, headers, data = await _get(_local(server, big["url"]), Range=f"bytes={len(BIG.data)}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(BIG.data)}"
    # If-Range with another validator: the whole content, not a piece of something else.
    status, _, data = await _get(
        _local(server, big["url"]), Range="bytes=0-9", **{"If-Range": '"x"'}
    )
    assert status == 200 and len(data) == len(BIG.data)
    status, _, data = await _get(_local(server, big["url"]), **{"If-None-Match": f'"{BIG.sha256}"'})
    assert (status, data) == (304, b"")


async def test_html_is_never_served_inline(
    store: Store, served: tuple[LinkServer, Clock, LinkMinter]
) -> None:
    server, clock, links = served
    item = await _record(store, message(PAGE), links, now=clock.now)
    (page,) = (await _body(item, links))["data"]["attachments"]
    status, headers, data = await _get(_local(server, page["url"]))
    assert status == 200 and data == PAGE.data
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Content-Disposition"] == 'attachment; filename="page.html"'
    assert headers["Content-Security-Policy"] == "sandbox"
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_raw_message_above_the_limit_is_a_link(
    store: Store, served: tuple[LinkServer, Clock, LinkMinter]
) -> None:
    server, clock, links = served
    raw = message(BIG)
    item = await _record(store, raw, links, now=clock.now, include_raw=True)
    data = (await _body(item, links, include_raw=True))["data"]
    assert data["raw"] is None
    assert data["raw_expires_at"] == "2027-01-15T09:00:00+00:00"
    assert data["raw_url"].split("?")[0].endswith(f"/a/{item.msg_id}/raw")
    status, headers, got = await _get(_local(server, data["raw_url"]))
    assert status == 200 and got == raw
    assert headers["Content-Type"] == "message/rfc822"
    assert headers["ETag"] == f'"{hashlib.sha256(raw).hexdigest()}"'


async def test_below_the_limit_nothing_changes(store: Store) -> None:
    raw = message(SMALL)
    plain = row(raw, include_raw=True)
    linked = row(raw, include_raw=True, links=minter())
    assert linked.payload == plain.payload and linked.links == ()


async def test_bad_requests_get_clear_statuses_and_leak_nothing(
    store: Store, served: tuple[LinkServer, Clock, LinkMinter]
) -> None:
    server, clock, links = served
    item = await _record(store, message(BIG), links, now=clock.now)
    (big,) = (await _body(item, links))["data"]["attachments"]
    url = _local(server, big["url"])
    parts = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(parts.query))
    base = f"{server.url}{parts.path}"

    async def status_of(target: str, method: str = "GET") -> tuple[int, bytes]:
        code, _, body = await _get(target, method)
        return code, body

    # Missing or tampered signature: 403, body says nothing about the content.
    assert (await status_of(base))[0] == 403
    assert (await status_of(f"{base}?expires={q['expires']}"))[0] == 403
    flipped = ("A" if q["signature"][0] != "A" else "B") + q["signature"][1:]
    code, text = await status_of(f"{base}?expires={q['expires']}&signature={flipped}")
    assert code == 403 and b"expired" not in text
    later = int(q["expires"]) + 1
    assert (await status_of(f"{base}?expires={later}&signature={q['signature']}"))[0] == 403
    # Enumerating ids or parts with a stolen signature: still 403, no 404 oracle.
    other = base.replace(item.msg_id, "msg_" + "0" * 32)
    assert (await status_of(f"{other}?{parts.query}"))[0] == 403
    assert (await status_of(f"{base[:-1]}5?{parts.query}"))[0] == 403
    # No listings, no traversal: anything but a link path is 404 and never touches the store.
    for path in [
        "/",
        "/a/",
        f"/a/{item.msg_id}/",
        "/files/",
        "/files/a/",
        "/../../etc/passwd",
        f"/files/a/{item.msg_id}/../../../etc/passwd",
        f"/files/a/{item.msg_id}/1/..",
        "/files/a/%2e%2e/%2e%2e/etc/passwd",
        f"/files/a/{item.msg_id}%2f1",
    ]:
        assert (await status_of(f"{server.url}{path}?{parts.query}"))[0] == 404, path
    assert (await status_of(url, "POST"))[0] == 405
    # Correctly signed, for content that does not exist: 404.
    unknown = links.signer.url("msg_" + "1" * 32, 1, int(clock.now) + 60)
    assert (await status_of(_local(server, unknown)))[0] == 404
    missing_part = links.signer.url(item.msg_id, 7, int(clock.now) + 60)
    assert (await status_of(_local(server, missing_part)))[0] == 404
    # Expired: 403 with a body that says so.
    clock.now = float(q["expires"])
    code, text = await status_of(url)
    assert code == 403 and b"expired" in text
    code, _ = await status_of(url, "HEAD")
    assert code == 403
    # Purged (the row was delivered and the links expired): a validly signed link gets 410.
    await store.mark_delivered(item.id, 200, clock.now)
    assert await server.sweep() == (1, len(BIG.data))
    assert await store.link_chunk(item.msg_id, 0, 0) is None
    fresh = links.signer.url(item.msg_id, 0, int(clock.now) + 60)
    code, text = await status_of(_local(server, fresh))
    assert code == 410 and b"purged" in text


async def test_sweep_keeps_content_while_a_link_or_the_row_needs_it(store: Store) -> None:
    links = minter(ttl=100)
    item = await _record(store, message(BIG), links, now=1000.0)
    assert item.links_expire == 1100
    assert await store.link_bytes() == len(BIG.data)
    assert await store.purge_links(1099) == (0, 0)  # links still valid
    assert await store.purge_links(1200) == (0, 0)  # row still pending (retries need it)
    await store.mark_dead(item.id, "boom", 500, 1200)
    assert await store.purge_links(1300) == (0, 0)  # dead letters can be replayed
    # dlq replay mints fresh links: the stored expiry moves, the body renders new URLs.
    old_body = await DeferredPayload(attachment_inline_limit=LIMIT, include_raw=False, links=links)(
        item
    )
    assert await store.replay([item.id], 1300, links_expire=links.expiry(1300)) == 1
    (again,) = await store.claim_due(1300, 10, "w", 60)
    assert again.links_expire == 1400
    new_body = await DeferredPayload(attachment_inline_limit=LIMIT, include_raw=False, links=links)(
        again
    )
    old_att = orjson.loads(old_body)["data"]["attachments"][0]
    new_att = orjson.loads(new_body)["data"]["attachments"][0]
    assert new_att["expires_at"] == "1970-01-01T00:23:20+00:00" != old_att["expires_at"]
    assert new_att["url"] != old_att["url"]
    await store.mark_delivered(again.id, 200, 1310)
    assert await store.purge_links(1399) == (0, 0)
    assert await store.purge_links(1400) == (1, len(BIG.data))
    assert await store.link_bytes() == 0
    link = await store.stored_link(item.msg_id, 0)
    assert link is not None and link.purged


async def test_delete_mode_purges_the_raw_at_once_unless_a_link_was_minted(store: Store) -> None:
    links = minter(ttl=100)
    small = await _record(store, message(SMALL), links, now=1000.0, uidl="small", delete=True)
    big = await _record(store, message(BIG), links, now=1000.0, uidl="big", delete=True)
    for item in (small, big):
        await store.mark_delivered(item.id, 200, 1001)
    await store.mark_deleted("acct", ["small", "big"], 1002)
    assert await store.raw_message(small.msg_id) is None
    assert await store.raw_message(big.msg_id) is not None  # kept with its links
    assert await store.purge_links(1100) == (1, len(BIG.data))
    assert await store.raw_message(big.msg_id) is None


async def test_a_template_without_links_config_is_dead_lettered_not_sent(store: Store) -> None:
    links = minter()
    item = await _record(store, message(BIG), links, now=1000.0)
    with pytest.raises(LookupError, match="attachments section"):
        await DeferredPayload(attachment_inline_limit=LIMIT, include_raw=False)(item)


def test_placeholders_in_a_message_are_not_rendered() -> None:
    links = minter()
    hostile = message(BIG, text='"\\u0000deadbeefdeadbeef:1:url\\u0000" \x00x')
    new = row(hostile, links=links)
    body = orjson.loads(links.render(new.payload, new.msg_id, 100.0))
    assert "deadbeefdeadbeef" in body["data"]["text"]
    assert body["data"]["attachments"][0]["url"].startswith("https://files.example.test/p3b/a/")


def test_link_path_shape() -> None:
    assert link_path("msg_" + "a" * 32, RAW) == "/a/msg_" + "a" * 32 + "/raw"

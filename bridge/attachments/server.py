"""The attachment link listener: signed GET/HEAD requests -> content streamed from the store.

Theory of operation
-------------------
Content is decoded once, when the message is recorded, and kept in the store in pieces of
`LINK_CHUNK` (256 KiB) bytes (`links` / `link_chunks` tables). We chose that over decoding
base64 out of the stored raw message on every request because a request then needs no MIME
parse and no knowledge of where a part sits in the raw bytes: a download, a resumed download
(Range) and a HEAD are plain reads of a few rows, identical on SQLite and PostgreSQL, and any
replica sharing a PostgreSQL store serves any link. The price is storage: a big attachment is
held twice (raw and decoded, about 1.75x) until the sweep purges the decoded copy after its
links expire.

Memory stays bounded whatever the size: one piece is read from the store at a time and written
to the socket, and aiohttp's writer waits for the socket to drain before the next piece, so a
slow reader holds at most one piece plus the transport's buffer.

Requests are checked in an order that leaks nothing to someone without a key (see
`bridge.attachments.signing`): a path that is not a link path is 404 whatever it is (no
listings, no traversal: only `/a/<msg_…>/<index|raw>` is ever looked up), a bad or missing
signature 403, an expired one 403 with a body saying so, and only then does the store decide
between 404 (no such content) and 410 (purged). Every answer carries `nosniff`, a sandbox CSP
and `no-referrer`; content always goes out as `Content-Disposition: attachment`, so HTML or
SVG in a mail is never rendered from our origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Literal

from aiohttp import web

from bridge.attachments.signing import LinkSigner, LinkVerdict, parse_path
from bridge.ops import metrics
from bridge.ops.metrics import best_effort
from bridge.ops.server import HTTPService
from bridge.store.base import LINK_CHUNK, Store, StoredLink
from bridge.store.errors import StoreError

__all__ = ["LinkServer", "LinkServerError", "content_disposition", "parse_range"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]

_TCHAR = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(f"{_TCHAR}/{_TCHAR}")
_COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-transform",
}


class LinkServerError(OSError):
    """The listener cannot listen (port taken, address not local); the message says what to set."""


def content_disposition(filename: str | None, fallback: str) -> str:
    """`attachment` with the name as RFC 6266 wants it: a plain ASCII `filename` (quotes,
    backslashes and controls replaced) for old clients, and `filename*` (RFC 8187 UTF-8,
    percent-encoded) whenever the name is not plain ASCII."""
    name = (filename or "").replace("/", "_").replace("\\", "_").strip() or fallback
    ascii_name = "".join(c if " " <= c < "\x7f" and c not in '"%' else "_" for c in name)
    value = f'attachment; filename="{ascii_name}"'
    if ascii_name != name:
        value += "; filename*=UTF-8''" + urllib.parse.quote(name, safe="")
    return value


def parse_range(header: str | None, size: int) -> tuple[int, int] | Literal[False] | None:
    """One byte range of `size` bytes as (first, last) inclusive; None: serve it all (no
    header, several ranges or a form we do not read, which RFC 9110 lets a server ignore);
    False: unsatisfiable (416)."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if (
        not dash
        or not (first_text.isdigit() or first_text == "")
        or not (last_text.isdigit() or last_text == "")
    ):
        return None
    if first_text == "":
        if last_text == "":
            return None
        length = int(last_text)
        if length == 0 or size == 0:
            return False
        return max(0, size - length), size - 1
    first = int(first_text)
    last = size - 1 if last_text == "" else min(int(last_text), size - 1)
    if last_text != "" and int(last_text) < first:
        return None  # syntactically invalid: ignore the header
    if first >= size:
        return False
    return first, last


class LinkServer(HTTPService):
    """Serves links and sweeps expired content every `sweep_interval` (an `HTTPService` on
    `bridge.lifecycle`: `start()` / `wait_ready()` / `stop(grace)`)."""

    def __init__(
        self,
        store: Store,
        signer: LinkSigner,
        host: str,
        port: int,
        *,
        sweep_interval: float = 300.0,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(host, port)
        self.store = store
        self.signer = signer
        self.sweep_interval = sweep_interval
        self.clock = clock
        self._prefix = urllib.parse.urlsplit(signer.public_url).path.rstrip("/")
        self._sweeper: asyncio.Task[None] | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    # -- lifecycle (bridge.lifecycle.Service) ------------------------------------------------------
    async def _start(self) -> None:
        try:
            await self._listen()
        except OSError as exc:
            raise LinkServerError(
                exc.errno,
                f"attachment link listener cannot listen on {self.host}:{self._port} "
                f"({exc.strerror}); set attachments.port or attachments.bind",
            ) from None
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="link-sweep")
        log.info("attachment links served on %s (public %s)", self.url, self.signer.public_url)

    async def _stop(self, grace: float | None) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        await super()._stop(grace)

    # -- retention -----------------------------------------------------------------------------
    async def sweep(self) -> tuple[int, int]:
        """Purge the content of expired links now; returns (parts, bytes) purged."""
        parts, size = await self.store.purge_links(self.clock())
        if parts:
            log.info("purged %d expired link content(s), %d bytes", parts, size)
            best_effort(lambda: metrics.LINK_PURGES.inc(parts))
            best_effort(lambda: metrics.LINK_BYTES_PURGED.inc(size))
        held = await self.store.link_bytes()
        best_effort(lambda: metrics.LINK_BYTES_HELD.set(held))
        return parts, size

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except StoreError as exc:
                log.warning("link sweep failed, retrying later: %s", exc)
            except Exception:
                log.exception("link sweep failed")
            await asyncio.sleep(self.sweep_interval)

    # -- requests ------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            response = await self._answer(request)
        except StoreError as exc:
            log.warning("link request failed: %s", exc)
            response = _plain(503, "the store is unavailable; try again later")
        best_effort(lambda: metrics.LINK_REQUESTS.labels(status=str(response.status)).inc())
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            response = _plain(405, "only GET and HEAD")
            response.headers["Allow"] = "GET, HEAD"
            return response
        # The path as sent: a link never holds percent-escapes, so one that does (an escaped
        # slash or dot trying to reshape the path after decoding) is simply not a link.
        path = request.rel_url.raw_path
        if self._prefix and path.startswith(self._prefix + "/"):
            path = path[len(self._prefix) :]
        target = parse_path(path)
        if target is None:
            return _plain(404, "not found")
        verdict = self.signer.check(
            path, request.query.get("expires"), request.query.get("signature"), self.clock()
        )
        if verdict is LinkVerdict.FORBIDDEN:
            return _plain(403, "forbidden: the link's signature is missing or wrong")
        if verdict is LinkVerdict.EXPIRED:
            return _plain(403, "expired: this link is no longer valid; ask for a fresh one")
        link = await self.store.stored_link(*target)
        if link is None:
            return _plain(404, "not found")
        if link.purged:
            return _plain(410, "gone: the content behind this link was purged")
        return await self._content(request, link)

    async def _content(self, request: web.Request, link: StoredLink) -> web.StreamResponse:
        etag = f'"{link.sha256}"'
        headers = dict(_COMMON_HEADERS)
        ctype = link.content_type if _MEDIA_TYPE.fullmatch(link.content_type) else None
        headers["Content-Type"] = ctype or "application/octet-stream"
        fallback = "message.eml" if link.part < 0 else f"attachment-{link.part}"
        headers["Content-Disposition"] = content_disposition(link.filename, fallback)
        headers["ETag"] = etag
        headers["Accept-Ranges"] = "bytes"
        if etag in _etags(request.headers.get("If-None-Match")):
            response = web.StreamResponse(status=304, headers=headers)
            return response
        wanted = parse_range(request.headers.get("Range"), link.size)
        if_range = request.headers.get("If-Range")
        if if_range is not None and if_range.strip() != etag:
            wanted = None  # the client's copy is of something else: send the whole
        if wanted is False:
            headers["Content-Range"] = f"bytes */{link.size}"
            return _plain(416, "the requested range is not within the content", headers)
        first, last = (0, link.size - 1) if wanted is None else wanted
        status = 200 if wanted is None else 206
        if status == 206:
            headers["Content-Range"] = f"bytes {first}-{last}/{link.size}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = last - first + 1
        await response.prepare(request)
        if request.method == "HEAD" or link.size == 0:
            await response.write_eof()
            return response
        sent = 0
        for seq in range(first // LINK_CHUNK, last // LINK_CHUNK + 1):
            chunk = await self.store.link_chunk(link.msg_id, link.part, seq)
            if chunk is None:
                # Purged while this download ran: cut the connection so the client cannot
                # mistake a short body for the whole.
                log.warning("link content vanished mid-download: %s/%s", link.msg_id, link.part)
                if request.transport is not None:
                    request.transport.close()
                break
            start = max(first - seq * LINK_CHUNK, 0)
            end = min(last + 1 - seq * LINK_CHUNK, len(chunk))
            piece = memoryview(chunk)[start:end]
            del chunk
            await response.write(piece)
            sent += len(piece)
        best_effort(lambda: metrics.LINK_BYTES_SERVED.inc(sent))
        if sent == last - first + 1:
            await response.write_eof()
        return response


def _etags(header: str | None) -> list[str]:
    if not header:
        return []
    return [tag.strip().removeprefix("W/") for tag in header.split(",")]


def _plain(status: int, text: str, extra: dict[str, str] | None = None) -> web.Response:
    headers = dict(_COMMON_HEADERS)
    headers.update(extra or {})
    headers["Cache-Control"] = "no-store"
    return web.Response(status=status, text=text + "\n", headers=headers)

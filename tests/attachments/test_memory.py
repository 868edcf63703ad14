"""A 50 MB attachment served to a slow reader grows the serving process's RSS by at most 16 MB,
on SQLite and on PostgreSQL. The link is minted and recorded here; another process (the one
measured) only serves it, and a raw-socket client with a small receive buffer reads it slowly."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from bridge.store import Store
from tests.attachments.support import Part, message, minter, row
from tests.support.rss import RssPeak

MB = 1024 * 1024
BOUND = 16 * MB


def _slow_get(port: int, target: str, *, pause: float, extra: str = "") -> tuple[bytes, str, int]:
    """HTTP/1.1 GET reading 64 KiB at a time with `pause` between reads.

    Returns the response head, and the sha256 and length of the body (never held whole).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        request = f"GET {target} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
        sock.sendall(request.encode())
        start = b""
        head = b""
        sha = hashlib.sha256()
        size = 0
        while True:
            piece = sock.recv(64 * 1024)
            if not piece:
                break
            if not head:
                start += piece
                if b"\r\n\r\n" in start:
                    head, _, piece = start.partition(b"\r\n\r\n")
                else:
                    continue
            sha.update(piece)
            size += len(piece)
            time.sleep(pause)  # the stimulus: a slow reader
        return head, sha.hexdigest(), size


async def test_a_50_mb_attachment_to_a_slow_reader_stays_within_16_mb(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    links = minter()
    big = Part("big.bin", "application/octet-stream", os.urandom(50 * MB))
    raw = message(big)
    new = row(raw, now=time.time(), limit=MB, links=links)
    await store.record([new], time.time())
    (link,) = new.links
    expires = int(time.time()) + 3600
    url = urllib.parse.urlsplit(links.signer.url(new.msg_id, link.part, expires))
    target = f"{url.path.removeprefix('/p3b')}?{url.query}"
    del new, raw, link

    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.attachments.serve_links", store_url, str(port_file)],
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            assert proc.poll() is None, "the link server exited"
            assert time.monotonic() < deadline, "the link server did not start"
            time.sleep(0.05)
        port = int(port_file.read_text())
        # Warm up every code path once (imports, pools, buffers) before the baseline.
        head, _, size = _slow_get(port, target, pause=0, extra="Range: bytes=0-999999\r\n")
        assert head.startswith(b"HTTP/1.1 206") and size == 1_000_000, head
        with RssPeak(proc.pid) as rss:
            head, digest, size = _slow_get(port, target, pause=0.004)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert (digest, size) == (big.sha256, len(big.data))
        # Shown with `pytest -s`: the figure the report quotes.
        print(f"\n50 MB to a slow reader: serving process RSS +{rss.growth / MB:.1f} MB")
        assert rss.growth <= BOUND, f"RSS grew by {rss.growth / MB:.1f} MB (bound 16 MB)"
    finally:
        proc.terminate()
        proc.wait(20)

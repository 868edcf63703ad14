"""Peak memory of parsing a large message stays within a small multiple of its size.

Memory, unlike wall-clock time, is deterministic enough to assert; speed lives in bench/.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tracemalloc

import bridge.mail as mail


def test_large_attachment_peak_memory_under_four_times_message_size() -> None:
    blob = os.urandom(12 * 1024 * 1024)
    raw = (
        b"From: a@example.com\r\nSubject: big\r\n"
        b"Content-Type: multipart/mixed; boundary=Z\r\n\r\n"
        b"--Z\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
        b"--Z\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\n" + base64.encodebytes(blob).replace(b"\n", b"\r\n") + b"--Z--\r\n"
    )
    tracemalloc.start()
    try:
        data = mail.build_message_data(raw, attachment_inline_limit=1 << 20, include_raw=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (att,) = data["attachments"]
    assert att["size"] == len(blob)
    assert att["sha256"] == hashlib.sha256(blob).hexdigest()
    assert att["content"] is None
    print(f"\npeak {peak / 1e6:.1f} MB for a {len(raw) / 1e6:.1f} MB message")
    assert peak < 4 * len(raw)

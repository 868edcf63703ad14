"""`build_message_data_and_fingerprint` must equal its two halves called separately.

The poller uses the combined call to parse each message once; the fingerprint it stores is
later compared with `fingerprint(TOP n 0 headers)` after a server migration, so any
difference would make old mail look new and deliver it twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bridge.mail as mail
from bridge.testing.samples import big_message, generate_messages

CORPUS = sorted((Path(__file__).resolve().parent.parent / "corpus" / "eml").glob("*.eml"))


def _assert_same(raw: bytes) -> None:
    data, fp = mail.build_message_data_and_fingerprint(
        raw, attachment_inline_limit=1 << 20, include_raw=False
    )
    assert data == mail.build_message_data(raw, attachment_inline_limit=1 << 20, include_raw=False)
    assert fp == mail.fingerprint(raw)
    # ...and the fingerprint of the message equals that of its header block alone (TOP n 0).
    end = min((i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0), default=-1)
    if end >= 0:
        assert fp == mail.fingerprint(raw[: end + 2])


def test_corpus_is_there() -> None:
    assert len(CORPUS) > 20


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_hostile_corpus(path: Path) -> None:
    _assert_same(path.read_bytes())


def test_generated_and_big() -> None:
    for raw in [*generate_messages(12, seed=5), big_message(200_000, seed=1)]:
        _assert_same(raw)


_PIECES = st.sampled_from(
    [
        b"Subject: hello\r\n",
        b"Subject: =?utf-8?B?w6k=?=\r\n",
        b"From: a@b\r\n",
        b"From x@y Mon Jan  1 00:00:00 2024\r\n",
        b"Message-ID: <1@x>\r\n",
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n",
        b" continued\r\n",
        b"\tfolded\r\n",
        b"no colon here\r\n",
        b"X-Bare: lf\n",
        b"X-CR: cr\rmid\r\n",
        b"\r\n",
        b"\n",
        b"body line\r\n",
        b"\xff\xfe: 8bit\r\n",
        b": empty name\r\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=14))
def test_arbitrary_header_shapes(pieces: list[bytes]) -> None:
    _assert_same(b"".join(pieces))

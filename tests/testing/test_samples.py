"""Sample mail is deterministic, well-formed and as varied as documented."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage

from bridge.testing.samples import big_message, demo_messages, encode_word, generate_messages


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_deterministic_and_seed_sensitive() -> None:
    assert generate_messages(12, seed=5) == generate_messages(12, seed=5)
    assert generate_messages(12, seed=5) != generate_messages(12, seed=6)
    # A prefix does not depend on how many messages were asked for.
    assert generate_messages(20, seed=5)[:12] == generate_messages(12, seed=5)


def test_crlf_only_unique_ids_and_dot_lines() -> None:
    msgs = generate_messages(40, seed=1, size=3000)
    ids = set()
    for raw in msgs:
        assert b"\n" not in raw.replace(b"\r\n", b"")
        assert b"\r" not in raw.replace(b"\r\n", b"")
        assert raw.endswith(b"\r\n")
        assert re.search(rb"\r\n\.", raw), "every sample exercises dot-stuffing"
        msg = parse(raw)
        ids.add(msg["Message-ID"])
        assert not msg.defects
    assert len(ids) == 40


def test_mix_of_structures_charsets_and_attachments() -> None:
    msgs = generate_messages(40, seed=2, size=4000)
    types = {parse(m).get_content_type() for m in msgs}
    assert {"text/plain", "multipart/alternative", "multipart/mixed"} <= types
    words = b" ".join(m.split(b"\r\n\r\n", 1)[0] for m in msgs)
    for charset in (b"utf-8", b"iso-8859-1", b"iso-2022-jp", b"shift_jis"):
        assert b"=?" + charset + b"?B?" in words
    subjects = {str(parse(m)["Subject"]) for m in msgs}
    assert "会議の議事録について" in subjects and "お見積りのご依頼" in subjects
    assert any("ü" in s or "é" in s for s in subjects)
    attachments = [
        part
        for m in msgs
        for part in parse(m).iter_attachments()
        if part.get_content_type() == "application/octet-stream"
    ]
    assert attachments
    for part in attachments:
        payload = part.get_content()
        assert isinstance(payload, bytes) and len(payload) >= 64
    names = {part.get_filename() for part in attachments}
    assert "見積書.dat" in names or "résumé.pdf" in names


def test_size_is_roughly_respected() -> None:
    for size in (2000, 5000, 20000):
        lengths = [len(m) for m in generate_messages(12, seed=0, size=size)]
        average = sum(lengths) / len(lengths)
        assert 0.6 * size < average < 1.4 * size, (size, average)


def test_encode_word_splits_and_round_trips() -> None:
    long_subject = "長い件名" * 20
    encoded = encode_word(long_subject, "iso-2022-jp")
    assert all(len(word) <= 75 for word in encoded.split("\r\n "))
    msg = parse(f"Subject: {encoded}\r\n\r\n".encode())
    assert str(msg["Subject"]) == long_subject


def test_big_message_size_and_structure() -> None:
    raw = big_message(2_000_000, seed=1)
    assert abs(len(raw) - 2_000_000) < 200
    assert raw == big_message(2_000_000, seed=1)
    blobs = list(parse(raw).iter_attachments())
    assert len(blobs) == 1
    content = blobs[0].get_content()
    assert isinstance(content, bytes) and len(content) > 1_400_000


def test_demo_messages_are_friendly_and_valid() -> None:
    msgs = demo_messages()
    assert 3 <= len(msgs) <= 10
    first = parse(msgs[0])
    assert first["Subject"] == "Welcome to pop3bridge"
    assert b"\r\n.\r\n" in msgs[0]  # shows off dot-stuffing in the demo
    assert len({parse(m)["Message-ID"] for m in msgs}) == len(msgs)

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import jsonschema
import orjson
import pytest

import bridge.mail as mail

Build = Callable[..., dict[str, Any]]

RAW = (
    b"Message-ID: <fp@example.com>\r\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0100\r\n"
    b"From: A <a@example.com>\r\n"
    b"Subject: a long subject that some servers\r\n fold differently\r\n"
    b"\r\n"
    b"body\r\n"
)


def test_fingerprint_same_for_message_and_top_headers() -> None:
    headers_only = RAW.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    refolded = RAW.replace(b"servers\r\n fold", b"servers fold").replace(b"\r\n", b"\n")
    fp = mail.fingerprint(RAW)
    assert fp == mail.fingerprint(headers_only) == mail.fingerprint(refolded)
    assert re.fullmatch("[0-9a-f]{64}", fp), fp  # a SHA-256 in lower-case hex


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<fp@example.com>", b"<other@example.com>"),
        (b"10:00:00", b"10:00:01"),
        (b"a@example.com", b"b@example.com"),
        (b"long subject", b"short subject"),
    ],
)
def test_fingerprint_changes_with_each_field(old: bytes, new: bytes) -> None:
    assert mail.fingerprint(RAW) != mail.fingerprint(RAW.replace(old, new))


def test_fingerprint_ignores_body_and_other_headers() -> None:
    other = RAW.replace(b"body", b"different").replace(b"\r\n\r\n", b"\r\nX-Spam: yes\r\n\r\n")
    assert mail.fingerprint(RAW) == mail.fingerprint(other)


def test_envelope_order_and_encoding(build: Build) -> None:
    data = build(RAW)
    when = dt.datetime(2024, 5, 1, 12, 0, 5, 123456, tzinfo=dt.UTC)
    body = mail.envelope(
        data, msg_id="msg_" + "0" * 32, account="support", uidl="u1", size=len(RAW), timestamp=when
    )
    assert list(body) == ["type", "timestamp", "data"]
    assert body["timestamp"] == "2024-05-01T12:00:05+00:00"
    assert list(body["data"])[:5] == ["id", "account", "uidl", "size", "source"]
    assert body["data"]["source"] == "poller"
    encoded = mail.encode(body)
    assert encoded == mail.encode(orjson.loads(encoded))  # deterministic, order preserved
    assert encoded.startswith(b'{"type":"message.received","timestamp":')
    proxy = mail.envelope(
        data,
        msg_id="msg_" + "0" * 32,
        account="a",
        uidl="u",
        size=1,
        timestamp=when,
        source="proxy",
    )
    assert proxy["data"]["source"] == "proxy"


def test_envelope_rejects_naive_time_and_bad_source(build: Build) -> None:
    data = build(RAW)
    with pytest.raises(mail.PayloadEncodingError, match="timezone-aware"):
        mail.envelope(data, msg_id="m", account="a", uidl="u", size=1, timestamp=dt.datetime.now())
    with pytest.raises(mail.PayloadEncodingError, match="source"):
        mail.envelope(
            data,
            msg_id="m",
            account="a",
            uidl="u",
            size=1,
            timestamp=dt.datetime.now(dt.UTC),
            source="smtp",
        )


def test_encode_raises_typed_error_for_unencodable_bodies() -> None:
    with pytest.raises(mail.PayloadEncodingError):
        mail.encode({"bad": "\ud800"})


def test_schema_is_valid_and_rejects_wrong_payloads(build: Build) -> None:
    schema = mail.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    when = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    good = mail.envelope(
        build(RAW), msg_id="msg_" + "f" * 32, account="a", uidl="u", size=1, timestamp=when
    )
    validator.validate(good)
    broken: list[dict[str, Any]] = []
    for key, value in [
        ("date", "2024-01-01 10:00"),
        ("extra", 1),
        ("id", "msg_short"),
        ("source", "smtp"),
        ("size", -1),
        ("from", [{"address": "x@y"}]),
    ]:
        copy = orjson.loads(mail.encode(good))
        copy["data"][key] = value
        broken.append(copy)
    missing = orjson.loads(mail.encode(good))
    del missing["data"]["parse_errors"]
    broken.append(missing)
    for body in broken:
        assert not validator.is_valid(body), body["data"]

"""Every payload a mail test builds goes through `build`, which validates it against the
published schema (format checks on) and proves it encodes; so the schema is exercised by the
whole suite, not by one test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import jsonschema
import orjson
import pytest

import bridge.mail as mail

FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER
VALIDATOR = jsonschema.Draft202012Validator(mail.schema(), format_checker=FORMATS)
WHEN = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def check_payload(data: dict[str, Any], size: int = 0) -> dict[str, Any]:
    body = mail.envelope(
        data, msg_id="msg_" + "ab" * 16, account="support", uidl="UID1", size=size, timestamp=WHEN
    )
    VALIDATOR.validate(body)
    assert orjson.loads(mail.encode(body)) == body
    return body


@pytest.fixture
def build() -> Callable[..., dict[str, Any]]:
    def _build(raw: bytes, *, limit: int = 1 << 20, include_raw: bool = False) -> dict[str, Any]:
        data = mail.build_message_data(raw, attachment_inline_limit=limit, include_raw=include_raw)
        check_payload(data, len(raw))
        return data

    return _build


@pytest.fixture
def check() -> Callable[..., dict[str, Any]]:
    return check_payload

"""Every payload a mail test builds goes through `build`, which validates it against the
published schema (format checks on) and proves it encodes; so the schema is exercised by the
whole suite, not by one test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from mail_schema_check import check_payload

import bridge.mail as mail


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

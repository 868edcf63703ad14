"""Schema check shared by the mail tests: validate (format checks on) and prove it encodes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import jsonschema
import orjson

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

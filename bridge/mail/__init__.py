"""RFC 5322/MIME bytes -> the `message.received` webhook payload (pure, no I/O)."""

from bridge.mail._fingerprint import HEADER_UID_PREFIX, header_keys, header_uid, message_id
from bridge.mail._helpdesk import DEFAULT_OPTIONS, MailOptions
from bridge.mail._mime import Content
from bridge.mail._payload import (
    HELPDESK_FIELDS,
    MAX_PARSE_ERRORS,
    build_message_data,
    build_message_data_and_fingerprint,
    degraded,
    encode,
    envelope,
    fingerprint,
    metadata_only,
    minimal,
    schema,
)
from bridge.mail.errors import MailError, PayloadEncodingError

__all__ = [
    "DEFAULT_OPTIONS",
    "HEADER_UID_PREFIX",
    "HELPDESK_FIELDS",
    "MAX_PARSE_ERRORS",
    "Content",
    "MailError",
    "MailOptions",
    "PayloadEncodingError",
    "build_message_data",
    "build_message_data_and_fingerprint",
    "degraded",
    "encode",
    "envelope",
    "fingerprint",
    "header_keys",
    "header_uid",
    "message_id",
    "metadata_only",
    "minimal",
    "schema",
]

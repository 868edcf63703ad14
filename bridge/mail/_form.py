"""multipart/form-data bytes (RFC 7578) for the Mailgun- and SendGrid-shaped requests.

Hand-written on purpose, in 40 lines: the body must be the same bytes on every build of a row
(the outbox rebuilds it per attempt, in a worker process or not), synchronously, and with a
boundary the receiver can be told. aiohttp's `FormData`/`MultipartWriter` pick a random
boundary and write through an async stream. The boundary here is derived from a seed (the
message id) and re-derived until it occurs in no value, and the body starts with it, so
`boundary_of(body)` recovers the Content-Type from the bytes alone.
"""

from __future__ import annotations

import hashlib

from bridge.records import record

__all__ = ["Field", "boundary_of", "encode"]

_PREFIX = "pop3bridge-"


@record
class Field:
    name: str
    value: str | bytes
    filename: str | None = None  # set for file parts
    content_type: str | None = None


def encode(fields: list[Field], seed: str) -> bytes:
    values = [f.value.encode("utf-8") if isinstance(f.value, str) else f.value for f in fields]
    boundary = _boundary(values, seed)
    out = bytearray()
    for field, value in zip(fields, values, strict=True):
        out += b"--" + boundary + b"\r\n"
        out += b'Content-Disposition: form-data; name="' + _quote(field.name) + b'"'
        if field.filename is not None:
            out += b'; filename="' + _quote(field.filename) + b'"'
        out += b"\r\n"
        if field.content_type is not None:
            out += b"Content-Type: " + _quote(field.content_type) + b"\r\n"
        out += b"\r\n" + value + b"\r\n"
    out += b"--" + boundary + b"--\r\n"
    return bytes(out)


def boundary_of(body: bytes) -> str | None:
    """The boundary of a body `encode` produced (its first line); None for any other body."""
    if not body.startswith(b"--" + _PREFIX.encode()):
        return None
    end = body.find(b"\r\n")
    return body[2:end].decode("ascii") if end > 2 else None


def _boundary(values: list[bytes], seed: str) -> bytes:
    counter = 0
    while True:
        digest = hashlib.sha256(f"{seed}\0{counter}".encode()).hexdigest()[:32]
        boundary = (_PREFIX + digest).encode("ascii")
        if not any(boundary in value for value in values):
            return boundary
        counter += 1


def _quote(text: str) -> bytes:
    # As browsers do (WHATWG form encoding): the three characters that would end the quoted
    # string or the header line are percent-escaped; everything else is UTF-8 as is.
    return text.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A").encode("utf-8")

"""Byte-level POP3 framing: dot-stuffing, receive buffer, response framer, command reader.

Everything here works on bytes only; no sockets.
"""

from __future__ import annotations

__all__ = ["dot_stuff"]

_TERMINATOR = b".\r\n"


def dot_stuff(data: bytes) -> bytes:
    """Turn a message into a multi-line body exactly as it goes on the wire.

    Line endings are left as they are (a server relays stored bytes; rewriting them would change
    signatures and hashes), so only CRLF counts as a line break: a '.' after a bare LF is not at
    the start of a line for a CRLF-framed reader and must not be doubled, or un-stuffing would
    not give back the original bytes.
    """
    body = data.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + _TERMINATOR

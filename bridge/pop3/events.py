"""Events the framers produce: small frozen dataclasses carrying content and the exact raw bytes.

`raw` is what came off the wire for that piece, so a proxy can relay byte-exact without
re-encoding (no re-stuffing, no re-ending of lines).
"""

from __future__ import annotations

from dataclasses import field

from bridge.records import record

__all__ = [
    "NEED_DATA",
    "AuthResponseLine",
    "Command",
    "ConnectionClosed",
    "Continuation",
    "DataChunk",
    "EndOfMultiline",
    "Event",
    "Greeting",
    "NeedData",
    "StatusResponse",
]


class NeedData:
    """Sentinel type: feed more bytes with `receive_data` before asking for the next event."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()


@record
class StatusResponse:
    """A +OK/-ERR line. `code` is the upper-cased RFC 2449 response code without brackets."""

    ok: bool
    code: str | None
    text: str
    raw: bytes = field(repr=False)

    def has_code(self, code: str) -> bool:
        """True if the response code is `code` or a more detailed form of it (RFC 2449 §8).

        Matching is by whole hierarchy levels, so "SYS/TEMP/EXTRA" matches "SYS/TEMP" but
        "SYSTEM" does not match "SYS".
        """
        if self.code is None:
            return False
        want = code.upper().split("/")
        return self.code.split("/")[: len(want)] == want


@record
class Greeting:
    """The server's first line. `timestamp` is the APOP challenge (with brackets) if present."""

    status: StatusResponse
    timestamp: str | None
    bare_lf: bool = False

    @property
    def ok(self) -> bool:
        return self.status.ok

    @property
    def text(self) -> str:
        return self.status.text

    @property
    def raw(self) -> bytes:
        return self.status.raw


@record
class Continuation:
    """A SASL challenge line ("+ base64"). `data` is the base64 text, not yet decoded."""

    data: str
    raw: bytes = field(repr=False)


@record
class DataChunk:
    """A piece of a multi-line body: un-stuffed `data` and the exact `raw` bytes it came from."""

    data: bytes
    raw: bytes = field(repr=False)


@record
class EndOfMultiline:
    """The terminating "." line of a multi-line response."""

    raw: bytes = field(repr=False)


@record
class ConnectionClosed:
    """The peer closed the connection at a point where nothing was outstanding."""


@record
class Command:
    """A POP3 command: upper-case verb and its arguments.

    `raw` is set by the command reader (what the client actually sent); the encoder ignores it.
    """

    verb: str
    args: tuple[str, ...] = ()
    raw: bytes = field(default=b"", repr=False, compare=False)

    def __repr__(self) -> str:
        # Keep credentials out of reprs that end up in logs and tracebacks.
        if self.verb in ("PASS", "APOP", "AUTH") and self.args:
            return f"Command(verb={self.verb!r}, args=<redacted>)"
        return f"Command(verb={self.verb!r}, args={self.args!r})"


@record
class AuthResponseLine:
    """A line a client sends in answer to a SASL challenge (base64, "=" or "*")."""

    data: str
    raw: bytes = field(repr=False)

    def __repr__(self) -> str:
        return "AuthResponseLine(<redacted>)"


Event = Greeting | StatusResponse | Continuation | DataChunk | EndOfMultiline | ConnectionClosed

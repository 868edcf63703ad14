"""What the relay hands the I/O layer and the log: actions, exchange records, and the FIFO entry.

Kept apart from `bridge.proxy.relay` so the log, the session glue and the handler read these
small types without the relay's state machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from bridge.pop3.commands import ResponseKind
from bridge.pop3.events import Command, StatusResponse
from bridge.proxy.auth import Credentials

__all__ = ["Actions", "CaptureSink", "Exchange", "Pending", "loggable_args"]

_SECRET_ARGS = frozenset({"PASS", "APOP", "AUTH"})  # arguments that `loggable_args` hides


class CaptureSink(Protocol):
    """What the relay needs from a tap capture (`bridge.proxy.tap.TapCapture`)."""

    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> None: ...

    def abort(self) -> None: ...


@dataclass(slots=True)  # not frozen: one per command, and frozen fields cost a call each
class Exchange:
    """One command and its response, for the log line and the metrics (never content).

    Read-only by convention: the relay builds it, the log reads it."""

    verb: str
    args: tuple[str, ...]
    outcome: str  # ok | err | denied | bad | unknown | lost
    code: str | None
    response_bytes: int
    latency: float
    local: bool
    note: str | None = None


@dataclass(slots=True)
class Actions:
    """Everything the I/O layer must do after a call, in this order: send, then act."""

    to_client: list[bytes] = field(default_factory=list)
    to_upstream: list[bytes] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    start_client_tls: bool = False
    login: Credentials | None = None
    close: str | None = None


@dataclass(slots=True)
class Pending:
    """One command in the relay's FIFO, from the moment it is read until it is answered."""

    verb: str
    args: tuple[str, ...]
    started: float
    kind: ResponseKind | None  # None: answered locally
    reply: bytes = b""
    outcome: str = ""
    note: str | None = None
    close: str | None = None
    login: bool = False  # waiting for the session's upstream login (routing)
    status: StatusResponse | None = None
    response_bytes: int = 0
    capa: bytearray | None = None
    capture: CaptureSink | None = None
    expected: bool = False  # the framer's events frame this response (not its span mode)


def loggable_args(command: Command) -> tuple[str, ...]:
    """Arguments safe to log: secrets replaced, the rest shortened."""
    args = command.args
    if not args:
        return args
    if command.verb not in _SECRET_ARGS and len(args) <= 3 and all(len(a) <= 64 for a in args):
        return args  # the common case (RETR 12, TOP 3 0): nothing to hide or shorten
    if command.verb == "PASS":
        return ("***",) if args else ()
    if command.verb == "APOP":
        return (args[0][:64], "***") if len(args) > 1 else tuple(a[:64] for a in args)
    if command.verb == "AUTH":
        return (args[0][:32], "***") if len(args) > 1 else tuple(a[:32] for a in args)
    return tuple(a[:64] for a in args[:3])

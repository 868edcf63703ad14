"""Typed errors for the POP3 core and client, split by whose fault it was.

* `LocalProtocolError`: we misused the session (bad argument, wrong state). A bug or a config error
  on our side; retrying will not help.
* `RemoteProtocolError`: the peer broke the protocol. Retrying may help with another server.
* `ConnectionLost` (and `ReadTimeout`): the network failed; safe to retry later. Nothing was
  committed, because only QUIT commits.
* `ResponseError`: the server answered -ERR; subclasses say what a caller should do about it.

Messages never contain a secret: callers build them from verbs and server text only, and the
command encoder redacts arguments of PASS/APOP/AUTH when it reports a bad argument.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.pop3.events import StatusResponse

__all__ = [
    "AuthenticationFailed",
    "BadCommandLine",
    "ConnectionLost",
    "InsecureAuthRefused",
    "LocalProtocolError",
    "POP3Error",
    "PermanentFailure",
    "ReadTimeout",
    "RemoteProtocolError",
    "ResponseError",
    "TLSFailure",
    "TemporaryFailure",
]


class POP3Error(Exception):
    """Base of every error this package raises on purpose."""


class LocalProtocolError(POP3Error):
    """We tried something the protocol or the session state does not allow."""


class RemoteProtocolError(POP3Error):
    """The server (or, for the command reader, the client) sent something that breaks POP3."""


class BadCommandLine(RemoteProtocolError):
    """A client sent a command line the reader refuses (NUL, bare CR, too long, no keyword).

    The reader has already skipped past the bad line, so the session stays in sync and the caller
    may answer -ERR and keep reading.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ConnectionLost(POP3Error):
    """The transport closed or failed before the exchange finished."""


class ReadTimeout(ConnectionLost):
    """The server sent nothing for longer than the read timeout."""


class TLSFailure(ConnectionLost):
    """TLS could not be set up or verified; never answered by falling back to plaintext."""


class InsecureAuthRefused(LocalProtocolError):
    """Sending this credential would expose it on an unencrypted link, and that was not allowed."""


class ResponseError(POP3Error):
    """The server answered -ERR. `status` is that reply (None when the server hung up instead)."""

    def __init__(self, message: str, status: StatusResponse | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthenticationFailed(ResponseError):
    """The credentials were refused; retrying with the same ones will not help.

    After `login(mechanism="auto")`, `tried` names the mechanisms refused so far and `untried`
    those that may still work on a new connection (the server hung up on the last attempt)."""

    tried: tuple[str, ...] = ()
    untried: tuple[str, ...] = ()
    unanswered = False  # the server hung up before answering this attempt at all


class TemporaryFailure(ResponseError):
    """The server is busy, locked or asks for a delay; `retry_after` is a hint in seconds."""

    def __init__(
        self, message: str, status: StatusResponse | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class PermanentFailure(ResponseError):
    """The server reports a lasting problem ([SYS/PERM]) or refused a command outright."""

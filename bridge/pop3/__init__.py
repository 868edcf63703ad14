"""POP3 protocol core (sans-I/O) and an asyncio client.

The core (`wire`, `commands`, `responses`, `state`, `sasl`, `connection`) works on bytes only, so
the client, the proxy and the test servers all share one framing and one state machine.
"""

from bridge.pop3.commands import ResponseKind, encode_command, response_kind
from bridge.pop3.connection import ClientConnection
from bridge.pop3.errors import (
    AuthenticationFailed,
    BadCommandLine,
    ConnectionLost,
    InsecureAuthRefused,
    LocalProtocolError,
    PermanentFailure,
    POP3Error,
    ReadTimeout,
    RemoteProtocolError,
    ResponseError,
    TemporaryFailure,
    TLSFailure,
)
from bridge.pop3.events import (
    NEED_DATA,
    AuthResponseLine,
    Command,
    ConnectionClosed,
    Continuation,
    DataChunk,
    EndOfMultiline,
    Greeting,
    StatusResponse,
)
from bridge.pop3.state import SessionState, State
from bridge.pop3.wire import CommandReader, ResponseFramer, dot_stuff, dot_unstuff

__all__ = [
    "NEED_DATA",
    "AuthResponseLine",
    "AuthenticationFailed",
    "BadCommandLine",
    "ClientConnection",
    "Command",
    "CommandReader",
    "ConnectionClosed",
    "ConnectionLost",
    "Continuation",
    "DataChunk",
    "EndOfMultiline",
    "Greeting",
    "InsecureAuthRefused",
    "LocalProtocolError",
    "POP3Error",
    "PermanentFailure",
    "ReadTimeout",
    "RemoteProtocolError",
    "ResponseError",
    "ResponseFramer",
    "ResponseKind",
    "SessionState",
    "State",
    "StatusResponse",
    "TLSFailure",
    "TemporaryFailure",
    "dot_stuff",
    "dot_unstuff",
    "encode_command",
    "response_kind",
]

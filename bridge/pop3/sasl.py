"""SASL mechanisms (RFC 5034) and the APOP digest, as pure step objects.

A mechanism says what to send first (`initial_response`, None if it has no initial send) and how
to answer each decoded challenge (`respond`). When the initial response could not go on the AUTH
line, the caller sends it in answer to the first challenge instead of calling `respond`.

Base64 and the AUTH line are built by `auth_command`, which applies RFC 5034 §4's rule: an
initial response that would push the AUTH line past 255 octets is not sent on it but after the
server's first (empty) challenge. That rule
is also what makes XOAUTH2 work with Microsoft 365, which wants the two-step form; real OAuth
tokens are long enough to trigger it.

Secrets never go into exception messages; the objects' reprs hide them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Protocol

from bridge.pop3.commands import MAX_COMMAND_LINE
from bridge.pop3.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "CramMD5",
    "Login",
    "Mechanism",
    "OAuthBearer",
    "Plain",
    "XOAuth2",
    "apop_digest",
    "auth_command",
    "decode_challenge",
    "encode_response",
]


class Mechanism(Protocol):
    name: str

    def initial_response(self) -> bytes | None: ...

    def respond(self, challenge: bytes) -> bytes: ...


def apop_digest(timestamp: str, secret: str) -> str:
    """RFC 1939 §7: lower-case hex MD5 of the greeting timestamp followed by the secret."""
    # MD5 is what the protocol specifies; this is not a security choice of ours.
    return hashlib.md5((timestamp + secret).encode("utf-8"), usedforsecurity=False).hexdigest()


def decode_challenge(data: str) -> bytes:
    """Strict base64 decoding of a "+ ..." challenge (RFC 5034 §4: reject, don't ignore, junk)."""
    try:
        if len(data) % 4:
            raise ValueError("base64 length is not a multiple of 4")
        return binascii.a2b_base64(data.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise RemoteProtocolError("server sent a SASL challenge that is not valid base64") from exc


def encode_response(data: bytes) -> str:
    """Base64 for a response line; RFC 5034 sends an empty response as an empty line."""
    return base64.b64encode(data).decode("ascii")


def auth_command(mechanism: Mechanism, *, allow_initial_response: bool = True) -> tuple[str, ...]:
    """Arguments of the AUTH command (mechanism [initial-response]).

    The initial response is left out when the server did not advertise SASL in CAPA (RFC 5034
    §3, for RFC 1734 servers), when the mechanism has none, or when the line would exceed 255
    octets; the caller then sends `initial_response()` after the first challenge.
    """
    ir = mechanism.initial_response() if allow_initial_response else None
    if ir is None:
        return (mechanism.name,)
    encoded = encode_response(ir) or "="
    if len(f"AUTH {mechanism.name} {encoded}\r\n") > MAX_COMMAND_LINE:
        return (mechanism.name,)
    return (mechanism.name, encoded)


class _Secret:
    def __repr__(self) -> str:
        return f"{type(self).__name__}(<redacted>)"


class Plain(_Secret):
    """RFC 4616: [authzid] NUL authcid NUL passwd, sent as the initial response."""

    name = "PLAIN"

    def __init__(self, username: str, password: str, authzid: str = "") -> None:
        self._msg = f"{authzid}\0{username}\0{password}".encode()

    def initial_response(self) -> bytes | None:
        return self._msg

    def respond(self, challenge: bytes) -> bytes:
        raise RemoteProtocolError("server sent a challenge after the PLAIN response")


class Login(_Secret):
    """The de-facto LOGIN mechanism: user name, then password, each on request."""

    name = "LOGIN"

    def __init__(self, username: str, password: str) -> None:
        self._answers = [username.encode(), password.encode()]

    def initial_response(self) -> bytes | None:
        return None

    def respond(self, challenge: bytes) -> bytes:
        if not self._answers:
            raise RemoteProtocolError("server asked for more than user name and password in LOGIN")
        return self._answers.pop(0)


class CramMD5(_Secret):
    """RFC 2195: user name, space, hex HMAC-MD5 of the challenge keyed by the password."""

    name = "CRAM-MD5"

    def __init__(self, username: str, password: str) -> None:
        self._user = username
        self._key = password.encode()

    def initial_response(self) -> bytes | None:
        return None

    def respond(self, challenge: bytes) -> bytes:
        if not challenge:
            raise RemoteProtocolError("server sent an empty CRAM-MD5 challenge")
        digest = hmac.new(self._key, challenge, "md5").hexdigest()
        return f"{self._user} {digest}".encode()


class XOAuth2(_Secret):
    """Google/Microsoft XOAUTH2: "user=" U ^A "auth=Bearer " T ^A ^A.

    A challenge after the initial response is an error report (base64 JSON); the answer is an
    empty line, after which the server sends -ERR.
    """

    name = "XOAUTH2"

    def __init__(self, username: str, token: str) -> None:
        self._msg = f"user={username}\x01auth=Bearer {token}\x01\x01".encode()
        self.error: bytes | None = None

    def initial_response(self) -> bytes | None:
        return self._msg

    def respond(self, challenge: bytes) -> bytes:
        self.error = challenge
        return b""


class OAuthBearer(_Secret):
    """RFC 7628 OAUTHBEARER; an error challenge is answered with a single ^A (§3.2.3)."""

    name = "OAUTHBEARER"

    def __init__(self, username: str, token: str, host: str = "", port: int | None = None) -> None:
        if "," in username or "=" in username:
            # RFC 5801 would need escaping; refusing is clearer than mis-encoding.
            raise LocalProtocolError("OAUTHBEARER user names may not contain ',' or '='")
        fields = [f"n,a={username},"]
        if host:
            fields.append(f"host={host}")
        if port is not None:
            fields.append(f"port={port}")
        fields.append(f"auth=Bearer {token}")
        self._msg = ("\x01".join(fields) + "\x01\x01").encode()
        self.error: bytes | None = None

    def initial_response(self) -> bytes | None:
        return self._msg

    def respond(self, challenge: bytes) -> bytes:
        self.error = challenge
        return b"\x01"

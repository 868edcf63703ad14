"""Taking credentials from a client when the proxy must choose the upstream (routing mode).

With routing the proxy cannot pick a server before it knows who is logging in, so it plays
the server for the AUTHORIZATION state: it accepts USER/PASS, AUTH PLAIN and AUTH LOGIN
(RFC 1939 §7, RFC 5034, draft-murchison-sasl-login), and hands the name and password to the
session, which logs in upstream with the POP3 client.

APOP cannot be routed: the client computes MD5(timestamp + password) over the timestamp in the
greeting it received, and only the server that issued that timestamp can check the digest. The
proxy greets before it knows the user, so the greeting (and timestamp) would be the proxy's,
and the proxy, which does not know the password, could neither verify the digest nor build a
valid one for the upstream's different timestamp. CRAM-MD5 and other challenge-response
mechanisms fail for the same reason. With a fixed upstream the upstream's greeting is relayed
unchanged, so APOP works end to end there.

No I/O here: the relay feeds commands and answer lines, this returns what to say or the
credentials. Secrets are kept only until `Credentials` is handed over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.pop3.errors import RemoteProtocolError
from bridge.pop3.events import Command
from bridge.pop3.sasl import decode_challenge

__all__ = ["ROUTABLE_MECHANISMS", "Challenge", "Credentials", "LocalLogin", "Refusal"]

ROUTABLE_MECHANISMS = ("PLAIN", "LOGIN")


@dataclass(frozen=True, slots=True)
class Credentials:
    user: str
    password: str = field(repr=False)
    mechanism: str  # how the client authenticated: USER, PLAIN or LOGIN


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send `line` ("+ ..." CRLF) and read the client's answer as an AUTH response line."""

    line: bytes


@dataclass(frozen=True, slots=True)
class Refusal:
    line: bytes  # a whole -ERR or +OK line
    failed_login: bool = False  # counts towards max_auth_attempts


_LOGIN_USER = b"+ VXNlcm5hbWU6\r\n"  # base64("Username:")
_LOGIN_PASS = b"+ UGFzc3dvcmQ6\r\n"  # base64("Password:")


def _b64(data: str) -> bytes:
    if data in ("", "="):
        return b""
    return decode_challenge(data)


class LocalLogin:
    """The proxy's side of the AUTHORIZATION dialogue, one client session."""

    def __init__(self) -> None:
        self._user: str | None = None  # after a successful USER
        self._mech: str | None = None  # an AUTH exchange in progress
        self._login_user: str | None = None

    @property
    def in_sasl(self) -> bool:
        return self._mech is not None

    def command(self, command: Command) -> Credentials | Challenge | Refusal:
        verb = command.verb
        if verb == "USER":
            if len(command.args) != 1:
                self._user = None
                return Refusal(b"-ERR USER takes one argument\r\n")
            self._user = command.args[0]
            return Refusal(b"+OK send PASS\r\n")
        if verb == "PASS":
            user, self._user = self._user, None
            if user is None or not command.args:
                return Refusal(b"-ERR send USER first\r\n")
            return Credentials(user, command.args[0], "USER")
        self._user = None
        if verb == "APOP":
            return Refusal(
                b"-ERR [AUTH] APOP cannot be used through this proxy; use USER/PASS or AUTH\r\n",
                failed_login=True,
            )
        if verb == "AUTH":
            return self._auth(command.args)
        return Refusal(b"-ERR command not valid before login\r\n")

    def _auth(self, args: tuple[str, ...]) -> Credentials | Challenge | Refusal:
        mech = args[0].upper() if args else ""
        if mech not in ROUTABLE_MECHANISMS or len(args) > 2:
            return Refusal(b"-ERR unsupported mechanism; use PLAIN or LOGIN\r\n")
        self._mech = mech
        if len(args) == 2:
            return self.answer(args[1])
        return Challenge(b"+ \r\n" if mech == "PLAIN" else _LOGIN_USER)

    def answer(self, data: str) -> Credentials | Challenge | Refusal:
        """The client's line in answer to the last challenge (RFC 5034 §4: "*" cancels)."""
        mech = self._mech
        assert mech is not None
        if data == "*":
            self._reset()
            return Refusal(b"-ERR AUTH cancelled\r\n")
        try:
            decoded = _b64(data)
        except RemoteProtocolError:
            self._reset()
            return Refusal(b"-ERR malformed base64 in AUTH response\r\n", failed_login=True)
        if mech == "PLAIN":
            self._reset()
            parts = decoded.split(b"\x00")
            if len(parts) != 3 or not parts[1]:
                return Refusal(b"-ERR malformed PLAIN response\r\n", failed_login=True)
            authzid, authcid, password = (p.decode("utf-8", "replace") for p in parts)
            if authzid and authzid != authcid:
                return Refusal(
                    b"-ERR [AUTH] authorization identity is not supported\r\n", failed_login=True
                )
            return Credentials(authcid, password, "PLAIN")
        if self._login_user is None:
            self._login_user = decoded.decode("utf-8", "replace")
            return Challenge(_LOGIN_PASS)
        user = self._login_user
        self._reset()
        return Credentials(user, decoded.decode("utf-8", "replace"), "LOGIN")

    def _reset(self) -> None:
        self._mech = None
        self._login_user = None

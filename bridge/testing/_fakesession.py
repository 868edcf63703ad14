"""One connection of the fake POP3 server: AUTHORIZATION -> TRANSACTION -> UPDATE.

Split from `bridge.testing.fakepop3` (which keeps the listener, the mailbox and `Faults`) so
each file holds one job: this one is the per-connection state machine, the part a scripted
answer (`Faults.answer`) plugs into. `FakeSession.send` and `FakeSession.readline` are what a
script uses to put raw bytes on the wire and read the client's next line; `hang_up()` ends the
session without a reply.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.pop3.wire import dot_stuff

if TYPE_CHECKING:
    from bridge.testing.fakepop3 import ConnectionInfo, FakePOP3Server

__all__ = ["Drop", "Entry", "FakeSession", "Script"]

Script = Callable[["FakeSession", tuple[str, ...]], Awaitable[None]]
"""Answers one verb instead of the server: gets the session and the command's arguments."""


class Drop(Exception):
    """Ends a session without a reply (a fault, or the client vanished)."""


class _Cancelled(Exception):
    """The client answered a SASL challenge with "*" (RFC 5034 §4)."""


@dataclass
class Entry:
    data: bytes
    uidl: str


class FakeSession:
    """One client connection: AUTHORIZATION -> TRANSACTION -> UPDATE (RFC 1939 §3)."""

    def __init__(
        self,
        server: FakePOP3Server,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        info: ConnectionInfo,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.info = info
        self.faults = info.faults
        self.eol = b"\n" if self.faults.bare_lf else b"\r\n"
        self.timestamp = f"<{os.getpid()}.{info.index}.{time.time_ns()}@{server.hostname}>"
        self.pending_user: str | None = None
        self.entries: list[Entry] | None = None  # set in TRANSACTION
        self.deleted: set[int] = set()  # 0-based indexes into `entries`
        self.holds_lock = False
        self.answered = 0

    def release(self) -> None:
        if self.holds_lock:
            self.server._locked = False
            self.holds_lock = False

    # -- output -----------------------------------------------------------------------------
    async def send(self, data: bytes) -> None:
        """Write `data` as it is and wait until the transport takes it (for scripts too)."""
        self.writer.write(data)
        await self.writer.drain()

    async def readline(self) -> bytes:
        """The client's next line, line ending included (a script reading a continuation)."""
        return await self.reader.readuntil(b"\n")

    def hang_up(self) -> None:
        """End the session now, without a reply (raises; the server closes the connection)."""
        self.info.dropped_by_server = True
        raise Drop

    def status(self, text: str) -> bytes:
        line = _utf8(text)
        huge = self.faults.huge_line
        if huge is not None and huge[0] == "status" and line.startswith(b"+OK"):
            room = huge[1] - len(line) - len(self.eol) - 1
            if room > 0:
                line += b" " + b"x" * room
        return line + self.eol

    def multiline(self, head: str, lines: Iterable[str]) -> bytes:
        body = _utf8("".join(f"{line}\r\n" for line in lines))
        return self.status(head) + self.body(body)

    def body(self, data: bytes) -> bytes:
        wire = dot_stuff(data)
        return wire.replace(b"\r\n", b"\n") if self.faults.bare_lf else wire

    # -- main loop --------------------------------------------------------------------------
    async def run(self) -> None:
        await self.stall("GREETING")
        await self.send(self.status(f"+OK POP3 fake server ready {self.timestamp}"))
        if self.faults.garbage_after_greeting is not None:
            await self.send(self.faults.garbage_after_greeting)
        while True:
            try:
                raw = await self.reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                await self.send(self.status("-ERR line too long"))
                raise Drop from None
            except asyncio.IncompleteReadError:
                raise Drop from None
            line = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            verb, _, rest = line.partition(" ")
            verb = verb.upper()
            args = (rest,) if verb == "PASS" else tuple(rest.split(" ")) if rest else ()
            record = (verb, ("<redacted>",) if verb == "PASS" and args else args)
            if verb == "AUTH" and len(args) > 1:
                record = (verb, (args[0], "<redacted>"))
            self.server.commands_seen.append(record)
            self.info.commands.append(record)
            await self.stall(verb)
            script = self.faults.answer.get(verb)
            if script is not None:
                await script(self, args)
                done = False
            else:
                done = await self.dispatch(verb, args)
            self.answered += 1
            if done:
                return
            limit = self.faults.close_after_commands
            if limit is not None and self.answered >= limit:
                self.info.dropped_by_server = True
                raise Drop

    async def stall(self, verb: str) -> None:
        delay = self.faults.stall_on.get(verb)
        if delay:
            await asyncio.sleep(delay)

    async def dispatch(self, verb: str, args: tuple[str, ...]) -> bool:
        """Answer one command; True when the session is over."""
        if verb == "QUIT":
            return await self.quit()
        if verb == "CAPA":
            await self.capa()
        elif verb == "NOOP" and self.entries is not None:
            await self.send(self.status("+OK"))
        elif self.entries is None:
            await self.authorization(verb, args)
        else:
            await self.transaction(verb, args)
        return False

    async def capa(self) -> None:
        if self.faults.no_capa:
            await self.send(self.status("-ERR unknown command"))
            return
        caps = ["TOP"]
        if not self.faults.no_uidl:
            caps.append("UIDL")
        caps += [] if self.faults.no_pipelining else ["PIPELINING"]
        caps += ["RESP-CODES", "AUTH-RESP-CODE"]
        if self.server.login_delay is not None:
            caps.append(f"LOGIN-DELAY {self.server.login_delay}")
        if self.entries is None:
            mechanisms = "PLAIN LOGIN"
            if self.server.bearer_tokens is not None:
                mechanisms += " XOAUTH2 OAUTHBEARER"
            caps += ["USER"] if self.faults.no_sasl else ["USER", f"SASL {mechanisms}"]
            if self.server.utf8:
                caps.append("UTF8")
            if self.stls_offered():
                caps.append("STLS")
        caps.append("IMPLEMENTATION pop3bridge-fake")
        await self.send(self.multiline("+OK capability list follows", caps))

    def stls_offered(self) -> bool:
        return (
            self.server.ssl_context is not None and not self.info.tls and not self.faults.strip_stls
        )

    # -- AUTHORIZATION ----------------------------------------------------------------------
    async def authorization(self, verb: str, args: tuple[str, ...]) -> None:
        pending, self.pending_user = self.pending_user, None
        if verb == "USER" and len(args) == 1:
            self.pending_user = args[0]
            await self.send(self.status("+OK send PASS"))
        elif verb == "PASS" and pending is not None:
            await self.login(pending, args[0] if args else "")
        elif verb == "APOP" and len(args) == 2 and self.faults.refuse_apop is not None:
            await self.refuse(self.faults.refuse_apop)
        elif verb == "APOP" and len(args) == 2:
            expected = hashlib.md5(  # noqa: S324 - APOP is defined on MD5 (RFC 1939 §7)
                (self.timestamp + self.server.password).encode()
            ).hexdigest()
            ok = hmac.compare_digest(_utf8(args[1].lower()), expected.encode())
            await self.login(args[0], self.server.password if ok else None)
        elif verb == "AUTH" and args and not self.faults.no_sasl:
            await self.auth(args)
        elif verb == "STLS" and not args:
            await self.stls()
        elif verb == "UTF8" and not args and self.server.utf8:
            await self.send(self.status("+OK UTF8 enabled"))
        elif verb in {"USER", "PASS", "APOP", "AUTH", "STLS"}:
            await self.send(self.status("-ERR invalid arguments or command order"))
        elif verb in {"STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP"}:
            await self.send(self.status("-ERR not allowed before authentication"))
        else:
            await self.send(self.status("-ERR unknown command"))

    async def login(self, name: str, password: str | None) -> None:
        if self.faults.err_on_pass is not None:
            await self.send(self.status(self.faults.err_on_pass))
            return
        good = (
            password is not None
            and hmac.compare_digest(_utf8(name), _utf8(self.server.user))
            and hmac.compare_digest(_utf8(password), _utf8(self.server.password))
        )
        if not good:
            await self.refuse("-ERR [AUTH] invalid user name or password")
            return
        if self.server._locked:
            await self.send(self.status("-ERR [IN-USE] maildrop is locked by another session"))
            return
        self.server._locked = self.holds_lock = True
        self.entries = self.server._sync()
        self.info.authenticated_as = name
        await self.send(self.status(f"+OK maildrop has {len(self.entries)} messages"))

    async def refuse(self, status: str) -> None:
        await self.send(self.status(status))
        if self.faults.hang_up_on_refused_login:
            self.info.dropped_by_server = True
            raise Drop

    async def auth(self, args: tuple[str, ...]) -> None:
        mech = args[0].upper()
        bearer = mech in {"XOAUTH2", "OAUTHBEARER"} and self.server.bearer_tokens is not None
        if mech not in {"PLAIN", "LOGIN"} and not bearer:
            await self.send(self.status("-ERR unsupported SASL mechanism"))
            return
        try:
            name, secret = await self.sasl_response(mech, args[1] if len(args) > 1 else None)
        except _Cancelled:
            await self.send(self.status("-ERR authentication cancelled"))
            return
        except (ValueError, binascii.Error, UnicodeDecodeError):
            await self.send(self.status("-ERR malformed SASL response"))
            return
        if not bearer:
            await self.login(name, secret)
            return
        # XOAUTH2 and OAUTHBEARER: the token must be in `bearer_tokens`; a refused one is a
        # plain -ERR [AUTH] (no JSON error challenge first).
        ok = bool(secret) and secret in (self.server.bearer_tokens or ())
        self.server.bearer_logins.append((mech, secret, ok))
        if ok:
            await self.login(self.server.user, self.server.password)
        else:
            await self.refuse("-ERR [AUTH] invalid token")

    async def sasl_response(self, mech: str, initial: str | None) -> tuple[str, str]:
        """(user, password) for PLAIN and LOGIN; ("", token) for XOAUTH2 (Google's format) and
        OAUTHBEARER (RFC 7628), which both carry an ``auth=Bearer <token>`` field among
        ^A-separated ones."""
        if mech == "LOGIN":
            first = initial if initial is not None else await self.challenge("VXNlcm5hbWU6")
            name = base64.b64decode(first, validate=True).decode()
            password = await self.challenge("UGFzc3dvcmQ6")
            return name, base64.b64decode(password, validate=True).decode()
        blob = initial if initial is not None else await self.challenge("")
        raw = b"" if blob == "=" else base64.b64decode(blob, validate=True)
        if mech == "PLAIN":
            parts = raw.split(b"\0")
            if len(parts) != 3:
                raise ValueError("PLAIN needs authzid NUL authcid NUL password")
            return parts[1].decode(), parts[2].decode()
        fields = raw.decode().split("\x01")
        prefix = "auth=Bearer "
        return "", next((f[len(prefix) :] for f in fields if f.startswith(prefix)), "")

    async def challenge(self, payload: str) -> str:
        await self.send(f"+ {payload}".encode() + self.eol)
        raw = await self.reader.readuntil(b"\n")
        self.server.commands_seen.append(("<sasl-response>", ("<redacted>",)))
        line = raw.rstrip(b"\r\n").decode("ascii", "replace")
        if line == "*":
            raise _Cancelled
        return line

    async def stls(self) -> None:
        ctx = self.server.ssl_context
        if not self.stls_offered() or ctx is None:
            await self.send(self.status("-ERR STLS not available"))
            return
        await self.send(self.status("+OK begin TLS negotiation"))
        # Anything the client pipelined behind STLS arrived in cleartext and must not be
        # executed inside the TLS session (RFC 2595 §4; the STARTTLS injection class of bugs).
        buffered = getattr(self.reader, "_buffer", None)
        if isinstance(buffered, bytearray):
            buffered.clear()
        await self.writer.start_tls(ctx)
        self.info.tls = True

    # -- TRANSACTION ------------------------------------------------------------------------
    def wire_message(self, entry: Entry) -> bytes:
        huge = self.faults.huge_line
        if huge is not None and huge[0] == "body":
            filler = max(huge[1] - len(b"X-Huge-Line: \r\n"), 0)
            return b"X-Huge-Line: " + b"a" * filler + b"\r\n" + entry.data
        return entry.data

    def message(self, arg: str) -> tuple[int, Entry] | str:
        """Resolve a message-number argument, or return the -ERR text."""
        assert self.entries is not None
        if not arg.isdigit():
            return f"-ERR invalid message number {arg[:20]!r}"
        n = int(arg)
        if not 1 <= n <= len(self.entries):
            return f"-ERR no such message {n}"
        if n - 1 in self.deleted:
            return f"-ERR message {n} already deleted"
        return n, self.entries[n - 1]

    def live(self) -> list[tuple[int, Entry]]:
        assert self.entries is not None
        return [(i + 1, e) for i, e in enumerate(self.entries) if i not in self.deleted]

    async def transaction(self, verb: str, args: tuple[str, ...]) -> None:
        handler = {
            "STAT": self.cmd_stat,
            "LIST": self.cmd_list,
            "UIDL": self.cmd_uidl,
            "RETR": self.cmd_retr,
            "TOP": self.cmd_top,
            "DELE": self.cmd_dele,
            "RSET": self.cmd_rset,
        }.get(verb)
        if verb == "UIDL" and self.faults.no_uidl:
            handler = None
        if handler is None:
            known = {"USER", "PASS", "APOP", "AUTH", "STLS"}
            reply = "-ERR not allowed after authentication" if verb in known else None
            await self.send(self.status(reply or "-ERR unknown command"))
            return
        await handler(args)

    async def cmd_stat(self, args: tuple[str, ...]) -> None:
        live = self.live()
        size = sum(len(self.wire_message(e)) for _, e in live)
        await self.send(self.status(f"+OK {len(live)} {size}"))

    async def _listing(self, args: tuple[str, ...], value: str) -> None:
        def show(e: Entry) -> str:
            return e.uidl if value == "uidl" else str(len(self.wire_message(e)))

        if args:
            found = self.message(args[0])
            if isinstance(found, str):
                await self.send(self.status(found))
            else:
                await self.send(self.status(f"+OK {found[0]} {show(found[1])}"))
            return
        live = self.live()
        lines = [f"{n} {show(e)}" for n, e in live]
        await self.send(self.multiline(f"+OK {len(live)} messages", lines))

    async def cmd_list(self, args: tuple[str, ...]) -> None:
        await self._listing(args, "size")

    async def cmd_uidl(self, args: tuple[str, ...]) -> None:
        await self._listing(args, "uidl")

    async def cmd_retr(self, args: tuple[str, ...]) -> None:
        found = self.message(args[0] if len(args) == 1 else "")
        if isinstance(found, str):
            await self.send(self.status(found))
            return
        data = self.wire_message(found[1])
        head = self.status(f"+OK {len(data)} octets")
        wire = self.body(data)
        cut = self.faults.drop_after_bytes_in_retr
        if cut is not None:
            await self.send(head + wire[:cut])
            self.info.dropped_by_server = True
            raise Drop
        await self.send(head + wire)

    async def cmd_top(self, args: tuple[str, ...]) -> None:
        if len(args) != 2 or not args[1].isdigit():
            await self.send(self.status("-ERR usage: TOP msg lines"))
            return
        found = self.message(args[0])
        if isinstance(found, str):
            await self.send(self.status(found))
            return
        data = self.wire_message(found[1])
        wanted = int(args[1])
        split = data.find(b"\r\n\r\n")
        part = data
        if split >= 0:
            lines = data[split + 4 :].split(b"\r\n")
            real = len(lines) - (1 if lines[-1] == b"" else 0)
            if wanted < real:
                part = data[: split + 4] + b"".join(line + b"\r\n" for line in lines[:wanted])
        await self.send(self.status("+OK top of message follows") + self.body(part))

    async def cmd_dele(self, args: tuple[str, ...]) -> None:
        found = self.message(args[0] if len(args) == 1 else "")
        if isinstance(found, str):
            await self.send(self.status(found))
            return
        self.deleted.add(found[0] - 1)
        await self.send(self.status(f"+OK message {found[0]} deleted"))

    async def cmd_rset(self, args: tuple[str, ...]) -> None:
        self.deleted.clear()
        live = self.live()
        await self.send(self.status(f"+OK maildrop has {len(live)} messages"))

    # -- UPDATE -----------------------------------------------------------------------------
    async def quit(self) -> bool:
        self.info.quit = True
        if self.entries is not None and not self.faults.quit_no_commit:
            self.server._commit([self.entries[i].uidl for i in sorted(self.deleted)])
        count = len(self.server.mailbox) if self.entries is not None else 0
        await self.send(self.status(f"+OK bye ({count} messages left)"))
        with contextlib.suppress(ConnectionError, OSError):
            if self.writer.can_write_eof():
                self.writer.write_eof()
        return True


def _utf8(text: str) -> bytes:
    # Command arguments are decoded with surrogateescape; echoing them must not raise.
    return text.encode("utf-8", "surrogateescape")

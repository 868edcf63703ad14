"""A scriptable asyncio POP3 server: correct by default, broken on request.

Dovecot is the reference for normal behaviour; this server exists for what Dovecot will not do
(drop mid-RETR, stall, lie in CAPA, answer with bare LF, ...) and for `pop3bridge demo`, which
needs a mailbox without installing anything. Its normal mode is therefore a faithful RFC 1939 /
2449 / 2595 / 5034 server: the maildrop is locked per session, message numbers are fixed at
login, and DELE only takes effect on QUIT from TRANSACTION (a dropped connection deletes
nothing).

The mailbox is a plain ``list[bytes]`` shared with the caller: append to it while the server
runs and the next session sees the new mail. UIDLs are assigned per list element (by object
identity) and stay stable while the element is in the list.

It deliberately does not reuse the project's command reader or response framer: a fake that
shared the client's parsing would share its bugs. Only `dot_stuff` (how bytes go on the wire) is
shared, so the fake and the real stack agree on one definition.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import itertools
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from bridge.lifecycle import Service
from bridge.pop3.wire import dot_stuff

__all__ = ["ConnectionInfo", "FakePOP3Server", "Faults"]

log = logging.getLogger(__name__)


_MAX_LINE = 64 * 1024  # generous: AUTH continuation lines may be long (RFC 5034 §4)


@dataclass(frozen=True)
class Faults:
    """Misbehaviour to inject. The default instance is a well-behaved server.

    Set `FakePOP3Server.faults` for every new connection, or `queue_faults(...)` to give the
    next connections their own (first queued, first used).
    """

    drop_after_bytes_in_retr: int | None = None
    """After the RETR status line, send this many body bytes, then close the connection."""
    stall_on: dict[str, float] = field(default_factory=dict)
    """Verb (upper case, or "GREETING") -> seconds to wait before answering it."""
    garbage_after_greeting: bytes | None = None
    """Raw bytes sent right after the greeting, before any command (e.g. b"+OK fake\\r\\n")."""
    err_on_pass: str | None = None
    """Status line sent instead of success to PASS, APOP and AUTH, e.g. "-ERR [IN-USE] busy"."""
    no_uidl: bool = False
    """UIDL is unknown (-ERR) and not advertised."""
    no_capa: bool = False
    """CAPA is unknown (-ERR)."""
    bare_lf: bool = False
    """Every line the server sends ends in LF only, message bodies included."""
    huge_line: tuple[Literal["status", "body"], int] | None = None
    """("status", n): every +OK line is padded to n octets; ("body", n): RETR/TOP bodies
    start with an extra header line of n octets (sizes in LIST/STAT include it)."""
    strip_stls: bool = False
    """STLS is neither advertised nor accepted, as after a downgrade attack."""
    quit_no_commit: bool = False
    """QUIT answers +OK but deletes nothing."""
    close_after_commands: int | None = None
    """Close the connection right after answering this many commands."""
    refuse_apop: str | None = None
    """Status line sent to every APOP, e.g. "-ERR Bad login": GNU mailutils pop3d and
    solid-pop3d put a timestamp in every greeting but refuse APOP for users without an APOP
    secret, while USER/PASS works."""
    hang_up_on_refused_login: bool = False
    """Close the connection right after refusing a login (APOP, PASS or AUTH)."""
    no_sasl: bool = False
    """No SASL in CAPA and AUTH unknown, as GNU mailutils pop3d built without GNU SASL."""


@dataclass
class ConnectionInfo:
    """What happened on one connection (for assertions)."""

    index: int
    faults: Faults
    commands: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    tls: bool = False
    authenticated_as: str | None = None
    quit: bool = False
    dropped_by_server: bool = False
    closed: bool = False
    error: bool = False  # the session ended on an unexpected exception in the fake itself


class _Drop(Exception):
    """Ends a session without a reply (a fault, or the client vanished)."""


@dataclass
class _Entry:
    data: bytes
    uidl: str


class FakePOP3Server(Service):
    """``async with FakePOP3Server(mailbox) as server:`` serves POP3 on 127.0.0.1:`server.port`.

    Credentials: `user`/`password` (USER/PASS, APOP, AUTH PLAIN, AUTH LOGIN). With
    `ssl_context`, STLS is offered; with `implicit_tls=True` as well, the listener speaks TLS
    from the first byte instead (POP3S) and STLS is not offered. With `utf8=True` it offers
    and accepts RFC 6856's UTF8 command (in AUTHORIZATION only, as §2 says). With
    `login_delay=n` its CAPA announces `LOGIN-DELAY n` (RFC 2449 §6.5), before and after login.
    """

    def __init__(
        self,
        mailbox: list[bytes] | None = None,
        *,
        user: str = "user",
        password: str = "password",  # noqa: S107 - a fake mailbox, not a credential
        ssl_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        hostname: str = "fakepop3.test",
        utf8: bool = False,
        login_delay: int | None = None,
    ) -> None:
        if implicit_tls and ssl_context is None:
            raise ValueError("implicit_tls=True needs an ssl_context")
        super().__init__()
        self.mailbox: list[bytes] = mailbox if mailbox is not None else []
        self.user = user
        self.password = password
        self.ssl_context = ssl_context
        self.implicit_tls = implicit_tls
        self.faults = faults or Faults()
        self.host = host
        self.port = port
        self.hostname = hostname
        self.utf8 = utf8
        self.login_delay = login_delay
        self.deleted_uidls: list[str] = []
        self.commands_seen: list[tuple[str, tuple[str, ...]]] = []
        self.connections: list[ConnectionInfo] = []
        self._queued: deque[Faults] = deque()
        self._entries: list[_Entry] = []
        self._uid_counter = itertools.count(1)
        self._uid_prefix = hashlib.sha256(os.urandom(8)).hexdigest()[:8]
        self._locked = False
        self._server: asyncio.Server | None = None

    # -- lifecycle (bridge.lifecycle.Service: start / ready / stop) -------------------------
    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve,
            self.host,
            self.port,
            ssl=self.ssl_context if self.implicit_tls else None,
            limit=_MAX_LINE,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _stop(self, grace: float | None) -> None:
        """Stop listening; the base then cuts every open session (deletions not committed)."""
        if self._server is not None:
            self._server.close()

    async def _finish(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.wait_closed()

    # -- test helpers -----------------------------------------------------------------------
    def queue_faults(self, *faults: Faults) -> None:
        """Use these faults for the next connections, one each, before falling back to `faults`."""
        self._queued.extend(faults)

    @property
    def uidls(self) -> list[str]:
        """The UIDL of every message currently in `mailbox`, in order."""
        self._sync()
        return [e.uidl for e in self._entries]

    def set_uidl(self, index: int, uidl: str) -> None:
        """Re-key mailbox[index] (0-based), e.g. to simulate a server migration."""
        self._sync()
        self._entries[index].uidl = uidl

    # -- internals --------------------------------------------------------------------------
    def _sync(self) -> list[_Entry]:
        """Match `mailbox` (possibly changed by the caller) to UIDLs, keeping known ones."""
        pool: dict[int, deque[_Entry]] = {}
        for entry in self._entries:
            pool.setdefault(id(entry.data), deque()).append(entry)
        fresh: list[_Entry] = []
        for data in self.mailbox:
            known = pool.get(id(data))
            if known:
                fresh.append(known.popleft())
            else:
                fresh.append(_Entry(data, f"{self._uid_prefix}.{next(self._uid_counter):06d}"))
        self._entries = fresh
        return list(fresh)

    def _commit(self, deleted: list[str]) -> None:
        gone = set(deleted)
        self._sync()
        self._entries = [e for e in self._entries if e.uidl not in gone]
        self.mailbox[:] = [e.data for e in self._entries]
        self.deleted_uidls.extend(deleted)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.track(task)
        faults = self._queued.popleft() if self._queued else self.faults
        info = ConnectionInfo(len(self.connections), faults, tls=self.implicit_tls)
        self.connections.append(info)
        session = _Session(self, reader, writer, info)
        graceful = True
        try:
            await session.run()
        except (_Drop, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            graceful = False  # server stopping: cut the session like a crash would
        except Exception:
            # A bug here must not leak the socket or kill the demo; record it for tests.
            log.exception("fake POP3 session %d failed", info.index)
            info.error = True
        finally:
            session.release()
            info.closed = True
        if graceful:
            # close() flushes what is still buffered (a partial RETR must reach the client);
            # a client that never reads would block that forever, hence the bound.
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 5)
            except (TimeoutError, ConnectionError, ssl.SSLError, asyncio.CancelledError):
                writer.transport.abort()
        else:
            writer.transport.abort()


class _Session:
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
        self.entries: list[_Entry] | None = None  # set in TRANSACTION
        self.deleted: set[int] = set()  # 0-based indexes into `entries`
        self.holds_lock = False
        self.answered = 0

    def release(self) -> None:
        if self.holds_lock:
            self.server._locked = False
            self.holds_lock = False

    # -- output -----------------------------------------------------------------------------
    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

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
                raise _Drop from None
            except asyncio.IncompleteReadError:
                raise _Drop from None
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
            done = await self.dispatch(verb, args)
            self.answered += 1
            if done:
                return
            limit = self.faults.close_after_commands
            if limit is not None and self.answered >= limit:
                self.info.dropped_by_server = True
                raise _Drop

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
        caps += ["PIPELINING", "RESP-CODES", "AUTH-RESP-CODE"]
        if self.server.login_delay is not None:
            caps.append(f"LOGIN-DELAY {self.server.login_delay}")
        if self.entries is None:
            caps += ["USER"] if self.faults.no_sasl else ["USER", "SASL PLAIN LOGIN"]
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
            raise _Drop

    async def auth(self, args: tuple[str, ...]) -> None:
        mech = args[0].upper()
        if mech not in {"PLAIN", "LOGIN"}:
            await self.send(self.status("-ERR unsupported SASL mechanism"))
            return
        try:
            if mech == "PLAIN":
                blob = args[1] if len(args) > 1 else await self.challenge("")
                raw = b"" if blob == "=" else base64.b64decode(blob, validate=True)
                parts = raw.split(b"\0")
                if len(parts) != 3:
                    raise ValueError("PLAIN needs authzid NUL authcid NUL password")
                name, password = parts[1].decode(), parts[2].decode()
            else:
                first = args[1] if len(args) > 1 else await self.challenge("VXNlcm5hbWU6")
                name = base64.b64decode(first, validate=True).decode()
                password = base64.b64decode(
                    await self.challenge("UGFzc3dvcmQ6"), validate=True
                ).decode()
        except _Cancelled:
            await self.send(self.status("-ERR authentication cancelled"))
            return
        except (ValueError, binascii.Error, UnicodeDecodeError):
            await self.send(self.status("-ERR malformed SASL response"))
            return
        await self.login(name, password)

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
    def wire_message(self, entry: _Entry) -> bytes:
        huge = self.faults.huge_line
        if huge is not None and huge[0] == "body":
            filler = max(huge[1] - len(b"X-Huge-Line: \r\n"), 0)
            return b"X-Huge-Line: " + b"a" * filler + b"\r\n" + entry.data
        return entry.data

    def message(self, arg: str) -> tuple[int, _Entry] | str:
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

    def live(self) -> list[tuple[int, _Entry]]:
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
        def show(e: _Entry) -> str:
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
            raise _Drop
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


class _Cancelled(Exception):
    """The client answered a SASL challenge with "*" (RFC 5034 §4)."""

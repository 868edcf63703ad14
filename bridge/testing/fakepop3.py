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

Scripted answers: a hostile server is this server with one verb answered by a script of the
test's own (`Faults(answer={"UIDL": script})`; the script gets the `FakeSession` and writes raw
bytes with `session.send`), so each test writes only its stimulus and every other command is
answered correctly. This module holds the listener, the mailbox and the fault switches;
`bridge.testing._fakesession` holds the per-connection state machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import ssl
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from bridge.lifecycle import Service
from bridge.testing._fakesession import Drop, Entry, FakeSession, Script

__all__ = ["ConnectionInfo", "FakePOP3Server", "FakeSession", "Faults", "Script"]

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
    no_pipelining: bool = False
    """PIPELINING is not advertised (RFC 2449 §6.6 leaves it optional): a client must wait
    for each reply before its next command."""
    answer: Mapping[str, Script] = field(default_factory=dict)
    """Verb (upper case) -> a script that answers it instead of the server, in any state:
    ``async def script(session: FakeSession, args: tuple[str, ...]) -> None`` (raw bytes with
    ``session.send``, ``session.readline()`` for a continuation, ``session.hang_up()``). For
    the hostile servers of tests/security: the lie is the script, the rest stays correct."""


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


class FakePOP3Server(Service):
    """``async with FakePOP3Server(mailbox) as server:`` serves POP3 on 127.0.0.1:`server.port`.

    Credentials: `user`/`password` (USER/PASS, APOP, AUTH PLAIN, AUTH LOGIN). With
    `ssl_context`, STLS is offered; with `implicit_tls=True` as well, the listener speaks TLS
    from the first byte instead (POP3S) and STLS is not offered. With `utf8=True` it offers
    and accepts RFC 6856's UTF8 command (in AUTHORIZATION only, as §2 says). With
    `login_delay=n` its CAPA announces `LOGIN-DELAY n` (RFC 2449 §6.5), before and after login.
    With `bearer_tokens` (a collection the caller may change while the server runs) it also
    offers SASL XOAUTH2 and OAUTHBEARER and accepts exactly those tokens for `user`; every
    such attempt is recorded in `bearer_logins` as (mechanism, token, accepted).
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
        bearer_tokens: Collection[str] | None = None,
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
        self.bearer_tokens = bearer_tokens
        self.bearer_logins: list[tuple[str, str, bool]] = []
        self.deleted_uidls: list[str] = []
        self.commands_seen: list[tuple[str, tuple[str, ...]]] = []
        self.connections: list[ConnectionInfo] = []
        self._queued: deque[Faults] = deque()
        self._entries: list[Entry] = []
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
    def verbs(self) -> list[str]:
        """The verb of every command received so far, in order (arguments left out)."""
        return [verb for verb, _ in self.commands_seen]

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
    def _sync(self) -> list[Entry]:
        """Match `mailbox` (possibly changed by the caller) to UIDLs, keeping known ones."""
        pool: dict[int, deque[Entry]] = {}
        for entry in self._entries:
            pool.setdefault(id(entry.data), deque()).append(entry)
        fresh: list[Entry] = []
        for data in self.mailbox:
            known = pool.get(id(data))
            if known:
                fresh.append(known.popleft())
            else:
                fresh.append(Entry(data, f"{self._uid_prefix}.{next(self._uid_counter):06d}"))
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
        session = FakeSession(self, reader, writer, info)
        graceful = True
        try:
            await session.run()
        except (Drop, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
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

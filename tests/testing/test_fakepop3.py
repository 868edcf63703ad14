"""The fake POP3 server: normal mode is a correct RFC 1939 server, and each fault does exactly
what `Faults` documents. Driven with raw asyncio sockets and Python's poplib, never with the
project's own client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import poplib
import re
import ssl

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.testing.fakepop3 import FakePOP3Server, FakeSession, Faults
from bridge.testing.samples import generate_messages
from tests.support.certs import TestCerts
from tests.support.wait import wait_until

MSG1 = b"Subject: one\r\nMessage-ID: <1@x>\r\n\r\nhello\r\n.\r\n..two dots\r\nend\r\n"
MSG2 = b"Subject: two\r\n\r\nline 1\r\nline 2\r\nline 3\r\n"


class Raw:
    """A minimal line-level POP3 client so tests see exactly the bytes the server sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, server: FakePOP3Server, **kw: object) -> Raw:
        r, w = await asyncio.open_connection(server.host, server.port, **kw)  # type: ignore[arg-type]
        return cls(r, w)

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(b"\n"), 5)

    async def cmd(self, text: str) -> bytes:
        self.writer.write(text.encode() + b"\r\n")
        return await self.line()

    async def body(self, eol: bytes = b"\r\n") -> bytes:
        """Read up to and including the terminator, return the raw (still stuffed) body."""
        data = b""
        while not (data == b"." + eol or data.endswith(eol + b"." + eol)):
            data += await self.line()
        return data

    async def login(self, user: str = "user", password: str = "password") -> None:
        assert (await self.line()).startswith(b"+OK")
        assert (await self.cmd(f"USER {user}")).startswith(b"+OK")
        assert (await self.cmd(f"PASS {password}")).startswith(b"+OK")

    async def eof(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 5) == b""

    def close(self) -> None:
        self.writer.transport.abort()


def unstuff(body: bytes) -> bytes:
    lines = body.split(b"\r\n")[:-2]  # drop ".", ""
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


# -- normal mode -------------------------------------------------------------------------


async def test_poplib_full_session_and_update_semantics() -> None:
    mailbox = [MSG1, MSG2]
    async with FakePOP3Server(mailbox) as server:

        def session() -> tuple[object, ...]:
            p = poplib.POP3(server.host, server.port, timeout=5)
            caps = p.capa()
            p.user("user")
            p.pass_("password")
            stat = p.stat()
            retr = p.retr(1)[1]
            top = p.top(2, 1)[1]
            uidls = p.uidl()[1]
            p.dele(1)
            p.quit()
            return caps, stat, retr, top, uidls

        caps, stat, retr, top, uidls = await asyncio.to_thread(session)
    wanted = {"TOP", "UIDL", "USER", "PIPELINING", "RESP-CODES", "AUTH-RESP-CODE"}
    assert wanted <= set(caps)  # type: ignore[call-overload]
    assert caps["SASL"] == ["PLAIN", "LOGIN"]  # type: ignore[index]
    assert "STLS" not in caps  # type: ignore[operator]
    assert stat == (2, len(MSG1) + len(MSG2))
    assert b"\r\n".join(retr) + b"\r\n" == MSG1  # type: ignore[arg-type]
    assert top == [b"Subject: two", b"", b"line 1"]
    first_uidl = uidls[0].split()[1].decode()  # type: ignore[index]
    assert mailbox == [MSG2]  # committed on QUIT, in the shared list
    assert server.deleted_uidls == [first_uidl]
    assert ("PASS", ("<redacted>",)) in server.commands_seen
    assert all("password" not in " ".join(args) for _, args in server.commands_seen)


async def test_dele_then_drop_deletes_nothing_and_dele_then_quit_deletes() -> None:
    mailbox = [MSG1, MSG2]
    async with FakePOP3Server(mailbox) as server:
        c = await Raw.connect(server)
        await c.login()
        assert (await c.cmd("DELE 1")).startswith(b"+OK")
        assert (await c.cmd("STAT")) == f"+OK 1 {len(MSG2)}\r\n".encode()
        c.close()  # no QUIT
        await wait_until(lambda: server.connections[0].closed)
        assert mailbox == [MSG1, MSG2] and server.deleted_uidls == []
        c = await Raw.connect(server)
        await c.login()
        assert (await c.cmd("STAT")).startswith(b"+OK 2 ")
        await c.cmd("DELE 2")
        assert (await c.cmd("RETR 2")).startswith(b"-ERR")
        await c.cmd("RSET")
        assert (await c.cmd("LIST 2")) == f"+OK 2 {len(MSG2)}\r\n".encode()
        await c.cmd("DELE 2")
        assert (await c.cmd("QUIT")).startswith(b"+OK")
        assert await c.eof()
    assert mailbox == [MSG1]


async def test_uidls_stable_and_new_mail_visible_next_session() -> None:
    mailbox = [MSG1]
    async with FakePOP3Server(mailbox) as server:
        before = server.uidls
        c = await Raw.connect(server)
        await c.login()
        mailbox.append(MSG2)  # arrives mid-session: numbers are fixed until the next login
        assert (await c.cmd("STAT")).startswith(b"+OK 1 ")
        assert (await c.cmd("QUIT")).startswith(b"+OK")
        c = await Raw.connect(server)
        await c.login()
        assert (await c.cmd("UIDL")).startswith(b"+OK")
        listing = (await c.body()).decode()
        assert listing.splitlines()[:2] == [f"1 {before[0]}", f"2 {server.uidls[1]}"]
        assert server.uidls[0] == before[0] and server.uidls[1] != before[0]
        assert (await c.cmd("UIDL 2")) == f"+OK 2 {server.uidls[1]}\r\n".encode()
        c.close()


async def test_dot_stuffing_and_pipelining_in_order() -> None:
    msgs = generate_messages(6, seed=3, size=1500)
    async with FakePOP3Server(list(msgs)) as server:
        c = await Raw.connect(server)
        await c.login()
        c.writer.write(b"".join(f"RETR {n}\r\n".encode() for n in range(1, 7)) + b"NOOP\r\n")
        stuffed = 0
        for n in range(6):
            assert (await c.line()) == f"+OK {len(msgs[n])} octets\r\n".encode()
            body = await c.body()
            assert unstuff(body) == msgs[n]
            stuffed += len(body) - len(b".\r\n") > len(msgs[n])
        assert (await c.line()) == b"+OK\r\n"
        assert stuffed == 6  # every sample has dot-led lines, so the wire differs
        c.close()


async def test_apop_and_sasl_plain_login() -> None:
    async with FakePOP3Server([MSG1], user="bob", password="s3cr3t pw") as server:
        c = await Raw.connect(server)
        greeting = (await c.line()).decode()
        stamp = re.search(r"<[^>]+>", greeting)
        assert stamp is not None
        digest = hashlib.md5((stamp.group(0) + "s3cr3t pw").encode()).hexdigest()
        assert (await c.cmd(f"APOP bob {digest}")).startswith(b"+OK")
        c.close()
        await wait_until(lambda: server.connections[-1].closed)  # the lock goes with it

        c = await Raw.connect(server)
        await c.line()
        ir = base64.b64encode(b"\0bob\0s3cr3t pw").decode()
        assert (await c.cmd(f"AUTH PLAIN {ir}")).startswith(b"+OK")
        assert (await c.cmd("AUTH PLAIN")).startswith(b"-ERR")  # already authenticated
        c.close()
        await wait_until(lambda: server.connections[-1].closed)

        c = await Raw.connect(server)
        await c.line()
        assert (await c.cmd("AUTH PLAIN")) == b"+ \r\n"
        assert (await c.cmd(ir)).startswith(b"+OK")
        c.close()
        await wait_until(lambda: server.connections[-1].closed)

        c = await Raw.connect(server)
        await c.line()
        assert (await c.cmd("AUTH LOGIN")) == b"+ VXNlcm5hbWU6\r\n"
        assert (await c.cmd(base64.b64encode(b"bob").decode())) == b"+ UGFzc3dvcmQ6\r\n"
        assert (await c.cmd(base64.b64encode(b"wrong").decode())).startswith(b"-ERR [AUTH]")
        assert (await c.cmd("AUTH PLAIN")) == b"+ \r\n"
        assert (await c.cmd("*")).startswith(b"-ERR")
        c.close()
    secret_free = repr(server.commands_seen)
    assert "s3cr3t" not in secret_free and ir not in secret_free


async def test_second_session_gets_in_use() -> None:
    async with FakePOP3Server([MSG1]) as server:
        a = await Raw.connect(server)
        await a.login()
        b = await Raw.connect(server)
        await b.line()
        await b.cmd("USER user")
        assert (await b.cmd("PASS password")).startswith(b"-ERR [IN-USE]")
        a.close()
        b.close()


async def test_state_errors() -> None:
    async with FakePOP3Server([MSG1]) as server:
        c = await Raw.connect(server)
        await c.line()
        assert (await c.cmd("STAT")).startswith(b"-ERR")
        assert (await c.cmd("PASS password")).startswith(b"-ERR")  # PASS without USER
        assert (await c.cmd("XYZZY")).startswith(b"-ERR")
        await c.cmd("USER user")
        assert (await c.cmd("PASS password")).startswith(b"+OK")
        assert (await c.cmd("USER user")).startswith(b"-ERR")
        assert (await c.cmd("RETR 9")).startswith(b"-ERR")
        assert (await c.cmd("RETR x")).startswith(b"-ERR")
        assert (await c.cmd("TOP 1 0")) == b"+OK top of message follows\r\n"
        assert unstuff(await c.body()) == b"Subject: one\r\nMessage-ID: <1@x>\r\n\r\n"
        c.close()


async def test_stls_upgrade_and_buffered_plaintext_discarded(tls_certs: TestCerts) -> None:
    async with FakePOP3Server([MSG1], ssl_context=tls_certs.server_context()) as server:
        c = await Raw.connect(server)
        await c.line()
        assert (await c.cmd("CAPA")).startswith(b"+OK")
        assert b"STLS\r\n" in await c.body()
        # An injected command pipelined behind STLS must not run inside TLS.
        c.writer.write(b"STLS\r\nUSER user\r\n")
        assert (await c.line()) == b"+OK begin TLS negotiation\r\n"
        await c.writer.start_tls(tls_certs.client_context(), server_hostname="localhost")
        assert (await c.cmd("CAPA")).startswith(b"+OK")
        caps = await c.body()
        assert b"STLS" not in caps
        assert (await c.cmd("PASS password")).startswith(b"-ERR")  # the USER was discarded
        await c.cmd("USER user")
        assert (await c.cmd("PASS password")).startswith(b"+OK")
        assert server.connections[0].tls
        c.close()


async def test_implicit_tls(tls_certs: TestCerts) -> None:
    async with FakePOP3Server(
        [MSG1], ssl_context=tls_certs.server_context(), implicit_tls=True
    ) as server:

        def session() -> int:
            p = poplib.POP3_SSL(
                "localhost", server.port, context=tls_certs.client_context(), timeout=5
            )
            p.user("user")
            p.pass_("password")
            n = p.stat()[0]
            p.quit()
            return n

        assert await asyncio.to_thread(session) == 1
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.to_thread(
                poplib.POP3_SSL,
                "localhost",
                server.port,
                context=tls_certs.wrong_client_context(),
                timeout=5,
            )


# -- faults -----------------------------------------------------------------------------


async def test_drop_after_bytes_in_retr() -> None:
    async with FakePOP3Server([MSG1], faults=Faults(drop_after_bytes_in_retr=10)) as server:
        c = await Raw.connect(server)
        await c.login()
        c.writer.write(b"RETR 1\r\n")
        assert (await c.line()).startswith(b"+OK")
        rest = await asyncio.wait_for(c.reader.read(), 5)
        assert rest == MSG1[:10]
        assert server.connections[0].dropped_by_server
        assert server.mailbox == [MSG1]


async def test_stall_on_verb() -> None:
    async with FakePOP3Server([MSG1], faults=Faults(stall_on={"STAT": 30})) as server:
        c = await Raw.connect(server)
        await c.login()
        c.writer.write(b"STAT\r\n")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(c.reader.readuntil(b"\n"), 0.3)
        c.close()
    # stop() cut the stalled session rather than waiting 30 s


async def test_garbage_after_greeting() -> None:
    junk = b"+OK injected\r\n\x00\xff garbage\r\n"
    async with FakePOP3Server([], faults=Faults(garbage_after_greeting=junk)) as server:
        c = await Raw.connect(server)
        assert (await c.line()).startswith(b"+OK POP3 fake server ready <")
        assert await c.line() == b"+OK injected\r\n"
        assert await c.line() == b"\x00\xff garbage\r\n"
        c.close()


@pytest.mark.parametrize(
    "code", ["-ERR [IN-USE] busy", "-ERR [LOGIN-DELAY] 900", "-ERR [SYS/TEMP] try later"]
)
async def test_err_on_pass(code: str) -> None:
    async with FakePOP3Server([], faults=Faults(err_on_pass=code)) as server:
        c = await Raw.connect(server)
        await c.line()
        await c.cmd("USER user")
        assert (await c.cmd("PASS password")) == code.encode() + b"\r\n"
        ir = base64.b64encode(b"\0user\0password").decode()
        assert (await c.cmd(f"AUTH PLAIN {ir}")) == code.encode() + b"\r\n"
        c.close()


async def test_no_uidl_and_no_capa() -> None:
    async with FakePOP3Server([MSG1], faults=Faults(no_uidl=True)) as server:
        c = await Raw.connect(server)
        await c.login()
        assert (await c.cmd("CAPA")).startswith(b"+OK")
        assert b"UIDL" not in await c.body()
        assert (await c.cmd("UIDL")).startswith(b"-ERR")
        assert (await c.cmd("UIDL 1")).startswith(b"-ERR")
        c.close()
    async with FakePOP3Server([MSG1], faults=Faults(no_capa=True)) as server:
        c = await Raw.connect(server)
        await c.line()
        assert (await c.cmd("CAPA")) == b"-ERR unknown command\r\n"
        c.close()


async def test_bare_lf_everywhere() -> None:
    async with FakePOP3Server([MSG1], faults=Faults(bare_lf=True)) as server:
        c = await Raw.connect(server)
        greeting = await c.line()
        assert greeting.endswith(b">\n") and b"\r" not in greeting
        await c.cmd("USER user")
        assert (await c.cmd("PASS password")).endswith(b"messages\n")
        assert (await c.cmd("RETR 1")).startswith(b"+OK")
        body = await c.body(eol=b"\n")
        assert b"\r" not in body
        assert body == MSG1.replace(b"\r\n.", b"\r\n..").replace(b"\r\n", b"\n") + b".\n"
        c.close()


async def test_huge_status_and_body_lines() -> None:
    async with FakePOP3Server([MSG1], faults=Faults(huge_line=("status", 10_000))) as server:
        c = await Raw.connect(server)
        greeting = await asyncio.wait_for(c.reader.readuntil(b"\r\n"), 5)
        assert len(greeting) == 10_000
        c.close()
    async with FakePOP3Server([MSG1], faults=Faults(huge_line=("body", 1_000_000))) as server:
        c = await Raw.connect(server, limit=2_000_000)  # our reader's line limit
        await c.login()
        size = int((await c.cmd("LIST 1")).split()[2])
        assert (await c.cmd("RETR 1")) == f"+OK {size} octets\r\n".encode()
        first = await c.line()
        assert len(first) == 1_000_000 and first.startswith(b"X-Huge-Line: aaa")
        assert unstuff(first + await c.body()) == first + MSG1
        assert size == 1_000_000 + len(MSG1)
        c.close()


async def test_strip_stls(tls_certs: TestCerts) -> None:
    faults = Faults(strip_stls=True)
    async with FakePOP3Server([], ssl_context=tls_certs.server_context(), faults=faults) as server:
        c = await Raw.connect(server)
        await c.line()
        await c.cmd("CAPA")
        assert b"STLS" not in await c.body()
        assert (await c.cmd("STLS")).startswith(b"-ERR")
        c.close()


async def test_quit_no_commit() -> None:
    async with FakePOP3Server([MSG1, MSG2], faults=Faults(quit_no_commit=True)) as server:
        c = await Raw.connect(server)
        await c.login()
        await c.cmd("DELE 1")
        assert (await c.cmd("QUIT")).startswith(b"+OK")
        assert server.mailbox == [MSG1, MSG2] and server.deleted_uidls == []


async def test_close_after_commands_and_per_connection_faults() -> None:
    async with FakePOP3Server([MSG1]) as server:
        server.queue_faults(Faults(close_after_commands=2))
        c = await Raw.connect(server)
        await c.line()
        assert (await c.cmd("CAPA")).startswith(b"+OK")
        await c.body()
        assert (await c.cmd("USER user")).startswith(b"+OK")
        assert await c.eof()
        assert server.connections[0].dropped_by_server
        c = await Raw.connect(server)  # queue used up: the default (no faults) again
        await c.login()
        assert (await c.cmd("NOOP")) == b"+OK\r\n"
        c.close()
    assert len(server.connections) == 2


async def test_a_scripted_verb_is_answered_by_the_script_and_the_rest_by_the_server() -> None:
    seen: list[tuple[str, ...]] = []

    async def uidl(session: FakeSession, args: tuple[str, ...]) -> None:
        seen.append(args)
        await session.send(b"+OK\r\n1 made-up\r\n")
        assert await session.readline() == b"MORE\r\n"  # a script may read a continuation
        await session.send(b".\r\n")

    async def dele(session: FakeSession, args: tuple[str, ...]) -> None:
        session.hang_up()

    async with FakePOP3Server([MSG1], faults=Faults(answer={"UIDL": uidl, "DELE": dele})) as s:
        c = await Raw.connect(s)
        await c.login()
        assert (await c.cmd("UIDL 1")) == b"+OK\r\n"
        assert (await c.cmd("MORE")) == b"1 made-up\r\n"
        assert (await c.line()) == b".\r\n"
        assert (await c.cmd("STAT")) == f"+OK 1 {len(MSG1)}\r\n".encode()  # the server's own
        c.writer.write(b"DELE 1\r\n")
        assert await c.eof()
    assert seen == [("1",)]
    assert s.verbs == ["USER", "PASS", "UIDL", "STAT", "DELE"]  # the continuation is no verb
    assert s.connections[0].dropped_by_server and s.mailbox == [MSG1]


async def test_bearer_tokens_are_checked_and_recorded() -> None:
    def blob(mech: str, token: str) -> str:
        if mech == "XOAUTH2":
            raw = f"user=me@x\x01auth=Bearer {token}\x01\x01"
        else:
            raw = f"n,a=me@x,\x01host=h\x01port=110\x01auth=Bearer {token}\x01\x01"
        return base64.b64encode(raw.encode()).decode()

    valid = {"good"}
    async with FakePOP3Server([MSG1], user="me@x", bearer_tokens=valid) as server:
        c = await Raw.connect(server)
        await c.line()
        assert (await c.cmd("CAPA")).startswith(b"+OK")
        assert "SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER" in (await c.body()).decode()
        assert (await c.cmd(f"AUTH XOAUTH2 {blob('XOAUTH2', 'bad')}")).startswith(b"-ERR [AUTH]")
        valid.add("later")  # the caller's set is read at each attempt
        assert (await c.cmd("AUTH OAUTHBEARER")) == b"+ \r\n"
        assert (await c.cmd(blob("OAUTHBEARER", "later"))).startswith(b"+OK")
        assert (await c.cmd("STAT")).startswith(b"+OK 1 ")
        c.close()
    assert server.bearer_logins == [("XOAUTH2", "bad", False), ("OAUTHBEARER", "later", True)]
    assert server.connections[0].authenticated_as == "me@x"
    async with FakePOP3Server([MSG1]) as plain:  # without bearer_tokens: not offered
        c = await Raw.connect(plain)
        await c.line()
        assert (await c.cmd("AUTH XOAUTH2")).startswith(b"-ERR")
        c.close()


_VERBS = [
    "USER",
    "PASS",
    "APOP",
    "AUTH",
    "STLS",
    "STAT",
    "LIST",
    "UIDL",
    "RETR",
    "TOP",
    "DELE",
    "RSET",
    "NOOP",
    "CAPA",
    "XYZ",
    "user",
    "Retr",
]
_ARGS = st.lists(
    st.one_of(
        st.sampled_from(["1", "2", "0", "-1", "99", "user", "password", "PLAIN", "LOGIN", "*"]),
        st.binary(min_size=1, max_size=12).filter(lambda b: b"\n" not in b and b" " not in b),
    ),
    max_size=3,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_VERBS), _ARGS), min_size=1, max_size=12))
async def test_any_command_sequence_gets_answers_and_never_breaks_the_server(
    commands: list[tuple[str, list[str | bytes]]],
) -> None:
    async with FakePOP3Server([MSG1, MSG2]) as server:
        c = await Raw.connect(server)
        await c.line()
        for verb, args in commands:
            parts = [verb.encode()] + [a.encode() if isinstance(a, str) else a for a in args]
            c.writer.write(b" ".join(parts) + b"\r\n")
            reply = await c.line()
            assert reply[:1] in (b"+", b"-"), reply
            upper = verb.upper()
            multi = upper in {"CAPA", "RETR", "TOP"} or (upper in {"LIST", "UIDL"} and not args)
            if reply.startswith(b"+OK") and multi:
                await c.body()
            elif reply.startswith(b"+ "):
                c.writer.write(b"*\r\n")  # cancel the SASL exchange
                assert (await c.line()).startswith(b"-ERR")
            elif verb.upper() == "STLS" and reply.startswith(b"+OK"):
                break  # would need a TLS handshake; the server has none here anyway
        c.close()
    assert not any(conn.error for conn in server.connections)
    assert server.mailbox == [MSG1, MSG2]  # nothing was committed without QUIT

"""The relay's pass-through path in TRANSACTION gives exactly what the framer path gives.

Two relays, one with `fast_path=False` (every response through the core's `ResponseFramer`),
get the same client pipeline and the same upstream bytes cut at the same places. After every
call both must have produced the same client bytes, upstream bytes, log records (verb,
arguments, outcome, code, response size, local or not) and close reason. Replies include what
the fast path must hand to the framer: response codes, bare LF, CR or NUL in a status line,
over-long lines, garbage, bodies full of dot lines and a connection that ends mid-response.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.pop3.events import Command
from bridge.pop3.state import State
from bridge.pop3.wire import ResponseFramer, dot_stuff
from bridge.proxy.handler import ProxySession
from bridge.proxy.policy import Policy, PolicyRules
from bridge.proxy.relay import Actions, Relay, loggable_args


def make_relay(*, fast: bool, read_only: bool, state: State) -> Relay:
    relay = Relay(
        session=ProxySession(Policy(PolicyRules(read_only=read_only, max_errors=1000))),
        upstream=ResponseFramer(line_ending="crlf", expect_greeting=False),
        clock=lambda: 0.0,
        fast_path=fast,
    )
    relay._state.state = state  # as after a relayed login (or before one)
    return relay


def summary(actions: Actions) -> tuple[object, ...]:
    return (
        b"".join(actions.to_client),
        b"".join(actions.to_upstream),
        [(e.verb, e.args, e.outcome, e.code, e.response_bytes, e.local) for e in actions.exchanges],
        actions.close,
        actions.start_client_tls,
    )


commands = st.sampled_from(
    [
        b"RETR 1\r\n",
        b"RETR 2\r\n",
        b"TOP 1 0\r\n",
        b"LIST\r\n",
        b"LIST 1\r\n",
        b"UIDL\r\n",
        b"UIDL 2\r\n",
        b"STAT\r\n",
        b"NOOP\r\n",
        b"DELE 1\r\n",  # denied when read-only: a local answer between forwarded ones
        b"RSET\r\n",
        b"LAST\r\n",
        b"CAPA\r\n",  # never on the fast path (its body is rewritten)
        b"XTND x\r\n",  # unknown: answered locally
        b"RETR\x001\r\n",  # bad line: answered locally
        b"QUIT\r\n",
    ]
)

dot_lines = st.lists(
    st.sampled_from([b".", b"..", b".x", b"x.", b"", b"text", b". .", b"\r", b"a\rb", b"\n"]),
    max_size=8,
)
status_lines = st.one_of(
    st.sampled_from(
        [
            b"+OK\r\n",
            b"+OK 120 octets\r\n",
            b"-ERR no such message\r\n",
            b"-ERR\r\n",
            b"+OK [IN-USE] busy\r\n",  # a response code: the framer parses it
            b"-ERR [SYS/TEMP] later\r\n",
            b"+OK bare LF\n",
            b"\r\n+OK after a stray line end\r\n",
            b"\n+OK after a stray LF\r\n",
            b"+OK a\rCR inside\r\n",
            b"+OK a NUL \x00 inside\r\n",
            b"+OKAY\r\n",
            b"+ERR\r\n",
            b"garbage\r\n",
            b"+OK " + b"x" * 600 + b"\r\n",
            b"+OK " + b"y" * 505 + b"\r\n",  # around the fast path's own line limit
            b"+OK " + b"y" * 506 + b"\r\n",
        ]
    ),
    st.binary(max_size=12).map(lambda b: b"+OK " + b + b"\r\n"),
)


@st.composite
def replies(draw: st.DrawFn) -> bytes:
    status = draw(status_lines)
    if not status.startswith(b"+OK") or draw(st.booleans()):
        return status
    body = b"".join(line + b"\r\n" for line in draw(dot_lines))
    return status + dot_stuff(body)


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(commands, min_size=1, max_size=20),
    st.lists(replies(), max_size=22),
    st.binary(max_size=6),
    st.lists(st.integers(1, 60), max_size=30),
    st.booleans(),
    st.booleans(),
    st.sampled_from([State.TRANSACTION, State.TRANSACTION, State.AUTHORIZATION]),
)
def test_fast_path_relays_what_the_framer_path_relays(
    pipeline: list[bytes],
    answers: list[bytes],
    trailer: bytes,
    cuts: list[int],
    read_only: bool,
    eof: bool,
    state: State,
) -> None:
    fast = make_relay(fast=True, read_only=read_only, state=state)
    slow = make_relay(fast=False, read_only=read_only, state=state)
    client = b"".join(pipeline)
    upstream = b"".join(answers) + trailer
    fast.client_data(client)
    slow.client_data(client)
    assert summary(fast.take()) == summary(slow.take())
    pos = 0
    for size in [*cuts, len(upstream)]:
        chunk = upstream[pos : pos + size]
        pos += size
        if not chunk or fast.closing is not None:
            break
        fast.upstream_data(chunk)
        slow.upstream_data(chunk)
        assert summary(fast.take()) == summary(slow.take())
        assert fast.closing == slow.closing
    if eof and fast.closing is None:
        fast.upstream_data(b"")
        slow.upstream_data(b"")
        assert summary(fast.take()) == summary(slow.take())
    assert fast.closing == slow.closing
    assert fast.state == slow.state


def test_a_pipeline_of_retrs_passes_through_byte_exact_with_one_record_each() -> None:
    relay = make_relay(fast=True, read_only=False, state=State.TRANSACTION)
    bodies = [b"a\r\n.b\r\n", b".\r\n..\r\n", b""]
    relay.client_data(b"".join(b"RETR %d\r\n" % n for n in (1, 2, 3)))
    assert relay.take().to_upstream == [b"RETR 1\r\n", b"RETR 2\r\n", b"RETR 3\r\n"]
    wire = b"".join(b"+OK\r\n" + dot_stuff(body) for body in bodies)
    out = Actions()
    for i in range(len(wire)):  # one byte at a time: every split of every terminator
        relay.upstream_data(wire[i : i + 1])
        got = relay.take()
        out.to_client += got.to_client
        out.exchanges += got.exchanges
    assert b"".join(out.to_client) == wire
    assert [(e.verb, e.args, e.outcome) for e in out.exchanges] == [
        ("RETR", ("1",), "ok"),
        ("RETR", ("2",), "ok"),
        ("RETR", ("3",), "ok"),
    ]
    assert sum(e.response_bytes for e in out.exchanges) == len(wire)
    assert relay._framer is not None and relay._framer.outstanding == 0  # all framed (span mode)


def test_read_only_dele_is_still_refused_in_its_place_between_passed_through_responses() -> None:
    relay = make_relay(fast=True, read_only=True, state=State.TRANSACTION)
    relay.client_data(b"RETR 1\r\nDELE 1\r\nSTAT\r\n")
    assert relay.take().to_upstream == [b"RETR 1\r\n", b"STAT\r\n"]
    relay.upstream_data(b"+OK\r\nx\r\n.\r\n+OK 1 3\r\n")
    got = relay.take()
    assert b"".join(got.to_client) == (
        b"+OK\r\nx\r\n.\r\n-ERR command not allowed by proxy policy\r\n+OK 1 3\r\n"
    )
    assert [(e.verb, e.outcome, e.local) for e in got.exchanges] == [
        ("RETR", "ok", False),
        ("DELE", "denied", True),
        ("STAT", "ok", False),
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["RETR", "TOP", "USER", "PASS", "APOP", "AUTH", "LIST", "XTND"]),
    st.lists(st.text(max_size=80), max_size=5),
)
def test_logged_arguments_hide_secrets_and_shorten_whatever_the_shortcut(
    verb: str, args: list[str]
) -> None:
    got = loggable_args(Command(verb, tuple(args)))
    if verb == "PASS":
        assert got == (("***",) if args else ())
    elif verb in ("APOP", "AUTH") and len(args) > 1:
        assert got[1:] == ("***",) and got[0] == args[0][: 64 if verb == "APOP" else 32]
    else:
        limit = 32 if verb == "AUTH" else 64
        assert got == tuple(a[:limit] for a in args[: 3 if verb not in ("APOP", "AUTH") else 1])


client_lines = st.one_of(
    st.sampled_from(
        [
            b"RETR 1\r\n",
            b"retr 2\r\n",
            b"TOP 1 0\r\n",
            b"LIST\r\n",
            b"UIDL 3\r\n",
            b"STAT\r\n",
            b"STAT 1\r\n",  # no such form: unknown
            b"DELE 1\r\n",
            b"NOOP\r\n",
            b"RETR 1 2 3\r\n",
            b"RETR  1\r\n",
            b"RETR 1 \r\n",
            b"RETR 1\n",
            b"RETR\t1\r\n",
            b"RETR 1\x00\r\n",
            b"RETR \r1\r\n",
            b"RETR " + b"9" * 70 + b"\r\n",
            b"RETR " + b"9" * 300 + b"\r\n",
            b"X" * 300,  # no line end yet: the reader must refuse it after 255 octets
            b"CAPA\r\n",
            b"QUIT\r\n",
            b"PASS a b\r\n",
            b"AUTH PLAIN\r\n",
            b"\r\n",
            b"RETRX 1\r\n",
            b"R\xc3\xa9TR 1\r\n",
        ]
    ),
    st.binary(max_size=20),
)


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(client_lines, min_size=1, max_size=20),
    st.lists(st.integers(1, 30), max_size=30),
    st.lists(st.integers(1, 30), max_size=30),
    st.booleans(),
    st.booleans(),
)
def test_fast_command_reading_reads_what_the_reader_reads(
    lines: list[bytes], client_cuts: list[int], reply_cuts: list[int], read_only: bool, eof: bool
) -> None:
    fast = make_relay(fast=True, read_only=read_only, state=State.TRANSACTION)
    slow = make_relay(fast=False, read_only=read_only, state=State.TRANSACTION)
    client = b"".join(lines)
    pos = 0
    for size in [*client_cuts, len(client)]:
        chunk = client[pos : pos + size]
        pos += size
        if not chunk or slow.closing is not None:
            break
        fast.client_data(chunk)
        slow.client_data(chunk)
        got = summary(fast.take())
        assert got == summary(slow.take())
        assert fast.client_backlog() == slow.client_backlog()
        # Answer what went upstream (-ERR is one line whatever the command), in pieces.
        sent = got[1]
        assert isinstance(sent, bytes)
        replies = b"-ERR x\r\n" * sent.count(b"\n")
        rpos = 0
        for rsize in [*reply_cuts, len(replies)]:
            piece = replies[rpos : rpos + rsize]
            rpos += rsize
            if not piece:
                break
            fast.upstream_data(piece)
            slow.upstream_data(piece)
            assert summary(fast.take()) == summary(slow.take())
    if eof and slow.closing is None:
        fast.client_data(b"")
        slow.client_data(b"")
        assert summary(fast.take()) == summary(slow.take())
    assert fast.closing == slow.closing
    assert fast.commands == slow.commands and fast.errors == slow.errors

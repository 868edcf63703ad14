"""The sans-I/O relay: byte-exact, ordered, refused commands answered in their place."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import ProxyPolicy
from bridge.pop3.wire import ResponseFramer, dot_stuff
from bridge.proxy.auth import Credentials
from bridge.proxy.handler import ProxySession
from bridge.proxy.policy import Policy
from bridge.proxy.relay import Actions, Relay
from bridge.proxy.routing import policy_rules


def fixed_relay(**policy: object) -> Relay:
    return Relay(
        session=ProxySession(Policy(policy_rules(ProxyPolicy.model_validate(policy)))),
        upstream=ResponseFramer(line_ending="crlf", expect_greeting=False),
        offer_stls=True,
    )


def feed(relay: Relay, data: bytes, sizes: list[int], *, upstream: bool) -> Actions:
    out = Actions()
    pos = 0
    for size in [*sizes, len(data)]:
        chunk, pos = data[pos : pos + max(1, size)], pos + max(1, size)
        if not chunk:
            break
        (relay.upstream_data if upstream else relay.client_data)(chunk)
        got = relay.take()
        out.to_client += got.to_client
        out.to_upstream += got.to_upstream
        out.exchanges += got.exchanges
        out.close = out.close or got.close
    return out


body_lines = st.lists(
    st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    max_size=6,
)

# (command line, response if forwarded or None if the proxy answers, kind)
command = st.one_of(
    st.just((b"STAT\r\n", "single")),
    st.just((b"NOOP\r\n", "single")),
    st.integers(1, 9).map(lambda n: (b"LIST %d\r\n" % n, "single")),
    st.just((b"LIST\r\n", "multi")),
    st.just((b"UIDL\r\n", "multi")),
    st.integers(1, 9).map(lambda n: (b"RETR %d\r\n" % n, "multi")),
    st.integers(1, 9).map(lambda n: (b"TOP %d 0\r\n" % n, "multi")),
    st.integers(1, 9).map(lambda n: (b"DELE %d\r\n" % n, "denied")),
    st.just((b"XTND foo\r\n", "unknown")),
    st.just((b"RETR\x00 1\r\n", "bad")),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(command, body_lines, st.booleans()), min_size=1, max_size=25),
    st.lists(st.integers(1, 40), max_size=30),
    st.lists(st.integers(1, 200), max_size=30),
)
def test_pipelined_stream_is_relayed_byte_exact_and_in_order(items, client_cuts, server_cuts):
    relay = fixed_relay(read_only=True, max_errors=1000)
    client_bytes = b"".join(line for (line, _), _, _ in items)
    forwarded = b""
    upstream_reply = b""
    expected = b""
    for (line, kind), lines, ok in items:
        if kind == "denied":
            expected += b"-ERR command not allowed by proxy policy\r\n"
        elif kind == "unknown":
            expected += b"-ERR unknown command\r\n"
        elif kind == "bad":
            expected += b"-ERR bad command line: command line contains NUL\r\n"
        else:
            forwarded += line
            if not ok:
                reply = b"-ERR no such message\r\n"
            elif kind == "single":
                reply = b"+OK 1 2\r\n"
            else:
                reply = b"+OK follows\r\n" + dot_stuff(b"\r\n".join(lines))
            upstream_reply += reply
            expected += reply
    out = feed(relay, client_bytes, client_cuts, upstream=False)
    assert b"".join(out.to_upstream) == forwarded
    back = feed(relay, upstream_reply, server_cuts, upstream=True)
    assert b"".join(out.to_client + back.to_client) == expected
    assert len(out.exchanges) + len(back.exchanges) == len(items)
    assert out.close is None and back.close is None


def test_barrier_waits_for_earlier_replies_and_nothing_after_it_is_read() -> None:
    relay = fixed_relay()
    relay.client_data(b"CAPA\r\nUSER bob\r\nPASS secret\r\n")
    assert relay.take().to_upstream == [b"CAPA\r\n"]
    relay.upstream_data(b"+OK\r\nUSER\r\nSTLS\r\nX-SECRET-THING\r\nUIDL\r\n.\r\n")
    out = relay.take()
    # The upstream's STLS and the unknown tag are gone; the proxy offers its own STLS.
    assert b"".join(out.to_client) == b"+OK\r\nUSER\r\nUIDL\r\nSTLS\r\n.\r\n"
    assert out.to_upstream == [b"USER bob\r\n"]
    relay.upstream_data(b"+OK\r\n")
    assert relay.take().to_upstream == [b"PASS secret\r\n"]
    relay.upstream_data(b"+OK logged in\r\n")
    out = relay.take()
    assert relay.user == "bob" and out.exchanges[0].args == ("***",)


def test_capa_hides_denied_commands() -> None:
    relay = fixed_relay(deny=["TOP", "UIDL"])
    relay.client_data(b"CAPA\r\n")
    relay.take()
    relay.upstream_data(b"+OK\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n")
    assert b"".join(relay.take().to_client) == b"+OK\r\nUSER\r\nSASL PLAIN LOGIN\r\nSTLS\r\n.\r\n"


def test_bytes_after_stls_close_the_session_before_tls() -> None:
    relay = fixed_relay()
    relay.client_data(b"STLS\r\nUSER injected\r\n")
    out = relay.take()
    assert out.close == "data after STLS" and not out.start_client_tls and not out.to_upstream


def test_stls_alone_starts_tls_and_forgets_earlier_input() -> None:
    relay = fixed_relay()
    relay.client_data(b"STLS\r\n")
    out = relay.take()
    assert out.start_client_tls and out.to_client == [b"+OK begin TLS negotiation\r\n"]
    relay.tls_started()
    relay.client_data(b"STLS\r\n")
    assert relay.take().to_client == [b"-ERR STLS not available\r\n"]


def test_require_tls_refuses_credentials_in_clear() -> None:
    relay = fixed_relay(require_tls=True)
    relay.client_data(b"USER bob\r\n")
    out = relay.take()
    assert out.to_upstream == [] and out.to_client[0].startswith(b"-ERR")


def test_long_and_bad_lines_answered_and_session_stays_in_sync() -> None:
    relay = fixed_relay(max_errors=10)
    relay.client_data(b"NOOP " + b"x" * 1_000_000 + b"\r\nA\rB\r\nSTAT\r\n")
    out = relay.take()
    assert out.to_upstream == [b"STAT\r\n"]
    relay.upstream_data(b"+OK 0 0\r\n")
    replies = b"".join(out.to_client + relay.take().to_client)
    assert replies.count(b"-ERR bad command line") == 2 and replies.endswith(b"+OK 0 0\r\n")
    assert all(len(b"".join(ex.args)) < 100 for ex in out.exchanges)


def test_too_many_errors_close() -> None:
    relay = fixed_relay(max_errors=2)
    relay.client_data(b"\x00\r\n\x00\r\n\x00\r\n")
    out = relay.take()
    assert out.close == "too many errors" and len(out.to_client) == 2


def test_read_only_quit_is_answered_locally_in_transaction() -> None:
    relay = fixed_relay(read_only=True)
    relay.client_data(b"USER a\r\n")
    relay.upstream_data(b"+OK\r\n")
    relay.client_data(b"PASS b\r\n")
    relay.upstream_data(b"+OK\r\n")
    relay.take()
    relay.client_data(b"DELE 1\r\nQUIT\r\n")
    out = relay.take()
    assert out.to_upstream == [] and out.close == "quit"
    assert out.to_client[0].startswith(b"-ERR") and out.to_client[1].startswith(b"+OK")


def test_upstream_dies_before_status_gives_sys_temp_and_mid_body_just_closes() -> None:
    relay = fixed_relay()
    relay.client_data(b"STAT\r\n")
    relay.take()
    relay.upstream_data(b"")
    out = relay.take()
    assert out.to_client == [b"-ERR [SYS/TEMP] upstream server connection lost\r\n"]
    relay = fixed_relay()
    relay.client_data(b"RETR 1\r\n")
    relay.take()
    relay.upstream_data(b"+OK\r\nhalf a mess")
    relay.upstream_data(b"")
    out = relay.take()
    assert b"".join(out.to_client) == b"+OK\r\nhalf a mess"  # never a made-up terminator
    assert out.close is not None and out.close.startswith("upstream failed")


def test_upstream_flood_of_stray_lfs_ends_the_session_cleanly() -> None:
    # Was RecursionError inside the relay, logged as an internal failure of the proxy.
    for verb in (b"STAT", b"CAPA"):  # the pass-through path and the framer's
        relay = fixed_relay()
        relay.client_data(verb + b"\r\n")
        relay.take()
        relay.upstream_data(b"\n" * 5000 + b"+OK 1 10\r\n")
        out = relay.take()
        assert out.to_client == [b"-ERR [SYS/TEMP] upstream server connection lost\r\n"]
        assert out.close is not None and "stray line feeds" in out.close


def test_fixed_sasl_continuations_are_relayed() -> None:
    relay = fixed_relay()
    relay.client_data(b"AUTH LOGIN\r\n")
    assert relay.take().to_upstream == [b"AUTH LOGIN\r\n"]
    relay.upstream_data(b"+ VXNlcm5hbWU6\r\n")
    relay.take()
    relay.client_data(b"Ym9i\r\n")  # a base64 line is not parsed as a command
    assert relay.take().to_upstream == [b"Ym9i\r\n"]
    relay.upstream_data(b"+ UGFzc3dvcmQ6\r\n")
    relay.client_data(b"cHc=\r\n")
    assert relay.take().to_upstream == [b"cHc=\r\n"]
    relay.upstream_data(b"+OK\r\n")
    assert relay.state.value == "transaction"


def routing_relay() -> Relay:
    return Relay(
        session=ProxySession(Policy(policy_rules(ProxyPolicy(max_auth_attempts=2)))), upstream=None
    )


def test_routing_user_pass_and_auth_plain_and_login_give_credentials() -> None:
    relay = routing_relay()
    relay.client_data(b"USER bob@example.com\r\nPASS pw 1\r\n")
    out = relay.take()
    assert out.to_client == [b"+OK send PASS\r\n"]
    assert out.login == Credentials("bob@example.com", "pw 1", "USER")
    relay = routing_relay()
    ir = base64.b64encode(b"\x00ann\x00pw2").decode()
    relay.client_data(f"AUTH PLAIN {ir}\r\n".encode())
    assert relay.take().login == Credentials("ann", "pw2", "PLAIN")
    relay = routing_relay()
    relay.client_data(b"AUTH LOGIN\r\n")
    relay.take()
    relay.client_data(base64.b64encode(b"cy") + b"\r\n")
    relay.take()
    relay.client_data(base64.b64encode(b"pw3") + b"\r\n")
    assert relay.take().login == Credentials("cy", "pw3", "LOGIN")


def test_routing_refuses_apop_and_counts_failed_logins() -> None:
    relay = routing_relay()
    relay.client_data(b"APOP bob 0123456789abcdef0123456789abcdef\r\n")
    out = relay.take()
    assert out.to_client[0].startswith(b"-ERR [AUTH] APOP") and out.close is None
    relay.client_data(b"USER bob\r\nPASS x\r\n")
    assert relay.take().login is not None
    relay.login_finished(reply=b"-ERR [AUTH] nope\r\n", upstream=None)
    out = relay.take()
    assert out.to_client == [b"-ERR [AUTH] nope\r\n"] and out.close == "too many failed logins"


def test_routing_capa_before_login_is_the_proxys() -> None:
    relay = routing_relay()
    relay.client_data(b"CAPA\r\n")
    text = b"".join(relay.take().to_client)
    assert b"SASL PLAIN LOGIN\r\n" in text and b"USER\r\n" in text and text.endswith(b"\r\n.\r\n")


def test_half_closed_client_still_gets_its_replies() -> None:
    relay = fixed_relay()
    relay.client_data(b"STAT\r\nNOOP\r\n")
    relay.client_data(b"")
    out = relay.take()
    assert out.to_upstream == [b"STAT\r\nNOOP\r\n"[:6], b"NOOP\r\n"] and out.close is None
    relay.upstream_data(b"+OK 0 0\r\n+OK\r\n")
    out = relay.take()
    assert out.to_client == [b"+OK 0 0\r\n", b"+OK\r\n"]
    assert out.close == "client closed the connection"


def test_utf8_is_relayed_not_refused_as_a_bad_keyword() -> None:
    # RFC 6856 UTF8 (a digit in the keyword) is in the proxy's CAPA; it must reach the server,
    # and its reply the client, without counting as a client error (max_errors=1 would close).
    relay = fixed_relay(max_errors=1)
    relay.client_data(b"UTF8\r\n")
    out = relay.take()
    assert out.to_upstream == [b"UTF8\r\n"] and out.to_client == [] and out.close is None
    relay.upstream_data(b"+OK UTF8 enabled\r\n")
    assert relay.take().to_client == [b"+OK UTF8 enabled\r\n"]
    assert relay.errors == 0
    relay.client_data(b"USER bob\r\n")
    assert relay.take().to_upstream == [b"USER bob\r\n"]

"""The proxy's one decision seam (bridge/proxy/handler.py), driven through the relay."""

from __future__ import annotations

from bridge.pop3.state import State
from bridge.pop3.wire import ResponseFramer, dot_stuff
from bridge.proxy.handler import ProxySession
from bridge.proxy.relay import Relay


class Sink:
    def __init__(self) -> None:
        self.data = b""
        self.finished = False

    def feed(self, chunk: bytes) -> None:
        self.data += chunk

    def finish(self) -> None:
        self.finished = True

    def abort(self) -> None:  # pragma: no cover - not reached here
        raise AssertionError("aborted")


class Recorder:
    """A handler that records what it was asked and answers as told."""

    def __init__(self, *, admit: bool = True) -> None:
        self.admit = admit
        self.calls: list[tuple[str, object]] = []
        self.sinks: list[Sink] = []

    def handle_LOGIN(self, session: ProxySession, user: str) -> bool:
        self.calls.append(("LOGIN", user))
        return self.admit

    def handle_RETR(self, session: ProxySession, msgno: int) -> Sink | None:
        self.calls.append(("RETR", (session.user, msgno)))
        self.sinks.append(Sink())
        return self.sinks[-1]


def relay_with(handler: Recorder, *, tapping: bool) -> Relay:
    session = ProxySession.of()
    session.tapping = tapping
    return Relay(
        session=session,
        upstream=ResponseFramer(line_ending="crlf", expect_greeting=False),
        handler=handler,
    )


def login(relay: Relay) -> bytes:
    relay.client_data(b"USER bob\r\nPASS secret\r\n")
    relay.take()
    relay.upstream_data(b"+OK\r\n")
    relay.take()
    relay.upstream_data(b"+OK logged in\r\n")
    return b"".join(relay.take().to_client)


def test_a_login_asks_the_handler_once_and_the_session_knows_the_user() -> None:
    handler = Recorder()
    relay = relay_with(handler, tapping=False)
    assert login(relay) == b"+OK logged in\r\n"
    assert handler.calls == [("LOGIN", "bob")]
    assert relay.session.user == "bob" and relay.state is State.TRANSACTION


def test_a_refused_login_is_in_use_and_ends_the_session() -> None:
    handler = Recorder(admit=False)
    relay = relay_with(handler, tapping=False)
    relay.client_data(b"USER bob\r\nPASS secret\r\n")
    relay.take()
    relay.upstream_data(b"+OK\r\n")
    relay.take()
    relay.upstream_data(b"+OK logged in\r\n")
    out = relay.take()
    assert out.to_client[-1] == b"-ERR [IN-USE] too many sessions for this user\r\n"
    assert out.close == "per-user connection limit" and relay.session.user is None


def test_retr_asks_for_a_capture_only_in_a_tapping_session() -> None:
    message = b"Subject: hi\r\n\r\nbody\r\n"
    for tapping in (False, True):
        handler = Recorder()
        relay = relay_with(handler, tapping=tapping)
        login(relay)
        relay.client_data(b"RETR 3\r\n")
        relay.take()
        relay.upstream_data(b"+OK\r\n" + dot_stuff(message))
        assert b"".join(relay.take().to_client) == b"+OK\r\n" + dot_stuff(message)
        asked = [call for call in handler.calls if call[0] == "RETR"]
        if tapping:
            assert asked == [("RETR", ("bob", 3))]
            assert handler.sinks[0].data == message and handler.sinks[0].finished
        else:
            assert asked == []

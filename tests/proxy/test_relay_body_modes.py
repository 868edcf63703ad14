"""The relay un-stuffs a body only for a reader (a tap capture); the client always gets the wire.

Bodies with no tap go through the framer's terminator-only mode, so a mix-up here would hand a
tap stuffed bytes (a copy that differs from the message) or slow the common path for nothing.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import ProxyPolicy
from bridge.pop3.state import State
from bridge.pop3.wire import ResponseFramer, dot_stuff
from bridge.proxy.handler import ProxySession
from bridge.proxy.policy import Policy
from bridge.proxy.relay import Relay
from bridge.proxy.routing import policy_rules


class Sink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.finished = False

    def feed(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def finish(self) -> None:
        self.finished = True

    def abort(self) -> None:  # pragma: no cover - not reached in these tests
        raise AssertionError("aborted")


lines = st.lists(
    st.sampled_from([b".", b"..", b".x", b"x.", b"", b"plain text", b". ."]), max_size=12
)


@settings(max_examples=150, deadline=None)
@given(lines, lines, st.lists(st.integers(1, 50), max_size=20))
def test_tapped_retr_gets_the_message_untapped_is_raw_client_gets_the_wire(
    tapped_lines: list[bytes], plain_lines: list[bytes], cuts: list[int]
) -> None:
    sinks: dict[int, Sink] = {}

    class Tap:
        """The relay's handler: only the tap hook matters here."""

        def handle_LOGIN(self, session: ProxySession, user: str) -> bool:
            return True

        def handle_RETR(self, session: ProxySession, msgno: int) -> Sink | None:
            if msgno != 1:
                return None  # e.g. a route with no tap, or one over its limits
            sinks[msgno] = Sink()
            return sinks[msgno]

    framer = ResponseFramer(line_ending="crlf", expect_greeting=False)
    session = ProxySession(Policy(policy_rules(ProxyPolicy())), tapping=True)
    relay = Relay(session=session, upstream=framer, handler=Tap())
    relay._state.state = State.TRANSACTION  # as after a relayed login
    tapped = b"".join(line + b"\r\n" for line in tapped_lines)
    plain = b"".join(line + b"\r\n" for line in plain_lines)
    relay.client_data(b"RETR 2\r\nRETR 1\r\nRETR 2\r\n")
    assert len(relay.take().to_upstream) == 3
    wire = b"".join(b"+OK\r\n" + dot_stuff(body) for body in (plain, tapped, plain))
    to_client: list[bytes] = []
    pos = 0
    for size in [*cuts, len(wire)]:
        if pos >= len(wire):
            break
        relay.upstream_data(wire[pos : pos + size])
        pos += size
        to_client += relay.take().to_client
    assert b"".join(to_client) == wire
    assert sinks[1].finished
    assert b"".join(sinks[1].chunks) == tapped
    assert framer.unstuff is False  # the last body had no reader

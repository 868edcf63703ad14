"""The POP3 session state machine (RFC 1939 §3-§6, RFC 2595 §4, RFC 5034 §4).

Theory of operation
-------------------
Rule 1: everything that decides which command is allowed when, and what a reply does to the
session, lives in the two tables below. Rule 2: this module does not know which side it runs
on. The client checks a command against the table *before* sending it (misuse raises
`LocalProtocolError` and nothing goes out); a proxy or a test server runs the same machine over
the commands it reads and the replies it relays.

A transition happens when the reply arrives, keyed by (state, verb, ok). A verb with no entry
leaves the state alone. QUIT is special only in where it leads: from TRANSACTION to UPDATE (the
server commits deletions), from AUTHORIZATION straight to CLOSED (nothing to commit, §6).

`AUTHORIZATION_USER` is AUTHORIZATION after a successful USER: PASS is allowed only here
(§7: "immediately after a successful USER"); another USER starts over.
"""

from __future__ import annotations

import enum

from bridge.pop3.errors import LocalProtocolError

__all__ = ["ALLOWED", "TRANSITIONS", "SessionState", "State"]


class State(enum.Enum):
    GREETING = "greeting"  # connected, greeting not yet received
    AUTHORIZATION = "authorization"
    AUTHORIZATION_USER = "authorization-user"
    TRANSACTION = "transaction"
    UPDATE = "update"  # QUIT accepted in TRANSACTION: deletions committed, connection ends
    CLOSED = "closed"  # QUIT in AUTHORIZATION, or a refused greeting

    # Members are compared by identity, so the identity hash is consistent with it; Enum's
    # own hashes the name in Python, and every command sent and reply read looks a state up
    # (`ALLOWED`, `TRANSITIONS`): ten calls per idle poll.
    __hash__ = object.__hash__


_AUTHORIZATION_VERBS = frozenset(
    {"USER", "APOP", "AUTH", "STLS", "CAPA", "UTF8", "LANG", "QUIT", "NOOP"}
)
_TRANSACTION_VERBS = frozenset(
    {"STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP", "LAST", "CAPA", "LANG", "QUIT"}
)

# state -> verbs a peer may send in it.
ALLOWED: dict[State, frozenset[str]] = {
    State.GREETING: frozenset(),
    State.AUTHORIZATION: _AUTHORIZATION_VERBS,
    State.AUTHORIZATION_USER: frozenset({"PASS", "USER", "QUIT"}),
    State.TRANSACTION: _TRANSACTION_VERBS,
    State.UPDATE: frozenset(),
    State.CLOSED: frozenset(),
}

# (state, verb, reply ok) -> next state. Missing: no change.
TRANSITIONS: dict[tuple[State, str, bool], State] = {
    (State.GREETING, "", True): State.AUTHORIZATION,
    (State.GREETING, "", False): State.CLOSED,
    (State.AUTHORIZATION, "USER", True): State.AUTHORIZATION_USER,
    (State.AUTHORIZATION_USER, "USER", True): State.AUTHORIZATION_USER,
    (State.AUTHORIZATION_USER, "USER", False): State.AUTHORIZATION,
    (State.AUTHORIZATION_USER, "PASS", True): State.TRANSACTION,
    (State.AUTHORIZATION_USER, "PASS", False): State.AUTHORIZATION,
    (State.AUTHORIZATION, "APOP", True): State.TRANSACTION,
    (State.AUTHORIZATION, "AUTH", True): State.TRANSACTION,
    (State.AUTHORIZATION, "QUIT", True): State.CLOSED,
    (State.AUTHORIZATION, "QUIT", False): State.CLOSED,
    (State.AUTHORIZATION_USER, "QUIT", True): State.CLOSED,
    (State.AUTHORIZATION_USER, "QUIT", False): State.CLOSED,
    # "-ERR some deleted messages not removed" still ends the session in UPDATE (§6).
    (State.TRANSACTION, "QUIT", True): State.UPDATE,
    (State.TRANSACTION, "QUIT", False): State.UPDATE,
}

# Verbs whose reply can change the state: a pipelining sender must wait for every earlier reply
# before sending one of these, so that the check below sees the real state.
STATE_CHANGING = frozenset(verb for (_, verb, _) in TRANSITIONS if verb)


class SessionState:
    """Tracks one POP3 session. `check` before sending, `on_reply` when the reply arrives."""

    def __init__(self, state: State = State.GREETING) -> None:
        self.state = state

    def allowed(self, verb: str) -> bool:
        return verb in ALLOWED[self.state]

    def after(self, verb: str, ok: bool = True) -> SessionState:
        """The session as it would be once `verb`'s reply (+OK when `ok`) arrives; this one
        is left as it is."""
        return SessionState(TRANSITIONS.get((self.state, verb, ok), self.state))

    def check(self, verb: str) -> None:
        if not self.allowed(verb):
            raise LocalProtocolError(
                f"{verb} is not allowed in the {self.state.value} state of a POP3 session"
            )

    def on_greeting(self, ok: bool) -> State:
        return self.on_reply("", ok)

    def on_reply(self, verb: str, ok: bool) -> State:
        self.state = TRANSITIONS.get((self.state, verb, ok), self.state)
        return self.state

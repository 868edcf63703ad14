"""The session state table (bridge/pop3/state.py): every verb in every state."""

from __future__ import annotations

import pytest

from bridge.pop3.commands import RESPONSE_KINDS
from bridge.pop3.errors import LocalProtocolError
from bridge.pop3.state import ALLOWED, SessionState, State

VERBS = sorted({verb for verb, _ in RESPONSE_KINDS} | {"XTND"})
AUTH_ONLY = {"USER", "APOP", "AUTH", "STLS", "UTF8"}
TRANSACTION_ONLY = {"STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "LAST"}


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_in_every_state(state: State, verb: str) -> None:
    s = SessionState(state)
    expected = verb in ALLOWED[state]
    if expected:
        s.check(verb)
    else:
        with pytest.raises(LocalProtocolError, match=verb):
            s.check(verb)
    if verb in AUTH_ONLY - {"USER"}:
        assert expected == (state is State.AUTHORIZATION)
    if verb == "USER":  # USER again after a successful USER starts over
        assert expected == (state in (State.AUTHORIZATION, State.AUTHORIZATION_USER))
    if verb in TRANSACTION_ONLY:
        assert expected == (state is State.TRANSACTION)
    if verb == "PASS":
        assert expected == (state is State.AUTHORIZATION_USER)


def test_user_pass_flow() -> None:
    s = SessionState()
    assert s.on_greeting(True) is State.AUTHORIZATION
    with pytest.raises(LocalProtocolError):
        s.check("PASS")  # PASS without USER (S2)
    assert s.on_reply("USER", True) is State.AUTHORIZATION_USER
    assert s.on_reply("PASS", False) is State.AUTHORIZATION
    assert s.on_reply("USER", True) is State.AUTHORIZATION_USER
    assert s.on_reply("PASS", True) is State.TRANSACTION
    with pytest.raises(LocalProtocolError):
        s.check("AUTH")  # no AUTH after login (S3)
    assert s.on_reply("QUIT", True) is State.UPDATE


def test_quit_in_authorization_skips_update() -> None:
    s = SessionState(State.AUTHORIZATION)
    assert s.on_reply("QUIT", True) is State.CLOSED


def test_stls_keeps_authorization() -> None:
    s = SessionState(State.AUTHORIZATION)
    assert s.on_reply("STLS", True) is State.AUTHORIZATION


def test_failed_greeting_closes() -> None:
    assert SessionState().on_greeting(False) is State.CLOSED

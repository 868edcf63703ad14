"""`bridge.proxy.policy`: what a client may do through the proxy and what CAPA it is shown
(pure; the relay's use of the verdicts is in test_relay.py, real clients in test_cli.py)."""

from __future__ import annotations

import pytest

from bridge.pop3.commands import LOGIN_VERBS
from bridge.pop3.events import Command
from bridge.pop3.state import State
from bridge.proxy.policy import (
    PROXY_CAPABILITIES,
    Decision,
    Policy,
    PolicyRules,
    rewrite_capa,
)

UPSTREAM_CAPA = (
    b"CAPA\r\nTOP\r\nUSER\r\nSASL PLAIN LOGIN CRAM-MD5 XOAUTH2\r\nRESP-CODES\r\n"
    b"PIPELINING\r\nUIDL\r\nSTLS\r\nX-SECRET-EXTENSION yes\r\nEXPIRE 0\r\n"
)


def decide(policy: Policy, verb: str, state: State = State.TRANSACTION, tls: bool = True) -> str:
    return policy.decide(Command(verb), state, encrypted=tls).decision.value


def test_default_policy_forwards_everything() -> None:
    policy = Policy(PolicyRules())
    for verb in ("USER", "PASS", "STAT", "RETR", "DELE", "TOP", "QUIT", "XYZZY"):
        assert decide(policy, verb) == "forward"


def test_allow_and_deny_lists_but_quit_always_passes() -> None:
    policy = Policy(
        PolicyRules(allow=frozenset({"USER", "PASS", "STAT"}), deny=frozenset({"STAT"}))
    )
    assert decide(policy, "USER", State.AUTHORIZATION) == "forward"
    assert decide(policy, "STAT") == "deny"  # deny wins over allow
    assert decide(policy, "RETR") == "deny"  # not allowed
    assert decide(policy, "QUIT") == "forward"  # a client can always leave
    verdict = policy.decide_verb("RETR", State.TRANSACTION, encrypted=True)
    assert verdict.reply == b"-ERR command not allowed by proxy policy\r\n"


def test_require_tls_refuses_every_login_verb_on_a_plain_link_only() -> None:
    policy = Policy(PolicyRules(require_tls=True))
    for verb in sorted(LOGIN_VERBS):
        plain = policy.decide_verb(verb, State.AUTHORIZATION, encrypted=False)
        assert plain.decision is Decision.DENY and b"STLS" in plain.reply, verb
        assert decide(policy, verb, State.AUTHORIZATION, tls=True) == "forward", verb
    assert decide(policy, "CAPA", State.AUTHORIZATION, tls=False) == "forward"
    assert decide(policy, "STLS", State.AUTHORIZATION, tls=False) == "forward"


def test_read_only_refuses_dele_and_answers_quit_itself_in_transaction() -> None:
    policy = Policy(PolicyRules(read_only=True))
    assert decide(policy, "DELE") == "deny"
    assert decide(policy, "RSET") == "forward"  # only undoes marks
    verdict = policy.decide_verb("QUIT", State.TRANSACTION, encrypted=True)
    assert verdict.decision is Decision.LOCAL_QUIT and verdict.reply.startswith(b"+OK")
    # Before login QUIT commits nothing, so it goes upstream as usual.
    assert decide(policy, "QUIT", State.AUTHORIZATION) == "forward"


def test_decide_looks_at_the_verb_only() -> None:
    policy = Policy(PolicyRules(deny=frozenset({"TOP"})))
    for args in ((), ("1",), ("1", "0")):
        assert policy.decide(Command("TOP", args), State.TRANSACTION, encrypted=True) == (
            policy.decide_verb("TOP", State.TRANSACTION, encrypted=True)
        )


@pytest.mark.parametrize(
    ("rules", "tls", "hidden"),
    [
        (PolicyRules(), True, set()),
        (PolicyRules(deny=frozenset({"TOP", "UIDL"})), True, {"TOP", "UIDL"}),
        (PolicyRules(deny=frozenset({"AUTH"})), True, {"SASL"}),
        (PolicyRules(allow=frozenset({"USER", "PASS", "STAT", "RETR"})), True,
         {"TOP", "UIDL", "SASL", "UTF8", "LANG"}),
        (PolicyRules(require_tls=True), False, {"USER", "SASL"}),
        (PolicyRules(require_tls=True), True, set()),
    ],
)  # fmt: skip
def test_hidden_capabilities_follow_the_refused_verbs(
    rules: PolicyRules, tls: bool, hidden: set[str]
) -> None:
    assert Policy(rules).hidden_capabilities(encrypted=tls) == hidden


def test_capa_keeps_surviving_lines_byte_for_byte() -> None:
    body = UPSTREAM_CAPA.split(b"\r\n", 1)[1]
    out = rewrite_capa(body, hidden=(), offer_stls=False)
    assert out == (
        b"TOP\r\nUSER\r\nSASL PLAIN LOGIN CRAM-MD5 XOAUTH2\r\nRESP-CODES\r\n"
        b"PIPELINING\r\nUIDL\r\nEXPIRE 0\r\n"
    )
    # The upstream's STLS and unknown extensions never reach the client.
    assert b"STLS" not in out and b"X-SECRET" not in out


def test_capa_hides_what_policy_refuses_and_offers_the_proxys_own_stls() -> None:
    body = UPSTREAM_CAPA.split(b"\r\n", 1)[1]
    policy = Policy(PolicyRules(deny=frozenset({"TOP"}), require_tls=True))
    out = rewrite_capa(body, hidden=policy.hidden_capabilities(encrypted=False), offer_stls=True)
    assert out == b"RESP-CODES\r\nPIPELINING\r\nUIDL\r\nEXPIRE 0\r\nSTLS\r\n"


def test_capa_sasl_narrowed_to_what_the_proxy_can_take() -> None:
    body = b"SASL CRAM-MD5 plain login\r\nUSER\r\n"
    out = rewrite_capa(body, hidden=(), offer_stls=False, sasl_mechanisms=["PLAIN", "LOGIN"])
    assert out == b"SASL PLAIN LOGIN\r\nUSER\r\n"
    # Nothing left to offer: the SASL line goes altogether.
    none = rewrite_capa(
        b"SASL CRAM-MD5\r\n", hidden=(), offer_stls=False, sasl_mechanisms=["PLAIN"]
    )
    assert none == b""


def test_capa_keeps_bare_lf_line_ends_as_the_server_sent_them() -> None:
    out = rewrite_capa(b"TOP\nSTLS\nUIDL\n", hidden=(), offer_stls=True)
    assert out == b"TOP\nUIDL\nSTLS\n"


def test_every_capability_the_proxy_relays_is_known_to_it() -> None:
    tags = {line.split()[0].decode() for line in UPSTREAM_CAPA.splitlines()[1:]}
    assert tags - PROXY_CAPABILITIES == {"X-SECRET-EXTENSION"}

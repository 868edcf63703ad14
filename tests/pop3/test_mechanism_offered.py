"""A forced mechanism the server does not offer: one error, naming what it offers instead."""

from __future__ import annotations

import pytest

from bridge.pop3.errors import AuthenticationFailed
from bridge.pop3.mechanisms import Offer, check_offered, offered

DOVECOT_LIKE = Offer(frozenset({"PLAIN", "LOGIN"}), apop=False, encrypted=True)


def test_offered_lists_what_the_server_announces() -> None:
    assert offered(DOVECOT_LIKE) == ["USER", "PLAIN", "LOGIN"]
    with_apop = Offer(frozenset({"CRAM-MD5"}), apop=True, encrypted=False)
    assert offered(with_apop) == ["USER", "APOP", "CRAM-MD5"]


@pytest.mark.parametrize("mech", ["CRAM-MD5", "OAUTHBEARER", "APOP"])
def test_a_forced_mechanism_not_offered_is_refused_before_sending(mech: str) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        check_offered(mech, DOVECOT_LIKE, capa_known=True, host="mail.example.com")
    assert str(info.value) == (
        f"mail.example.com does not offer {mech}; it offers USER, PLAIN, LOGIN"
    )


@pytest.mark.parametrize("mech", ["USER", "PLAIN", "LOGIN", "XOAUTH2"])
def test_offered_or_tolerated_mechanisms_pass(mech: str) -> None:
    # XOAUTH2: Gmail and Microsoft 365 accept it without announcing it.
    check_offered(mech, DOVECOT_LIKE, capa_known=True, host="h")


def test_without_capa_only_apop_can_be_judged() -> None:
    silent = Offer(frozenset(), apop=False, encrypted=False)
    check_offered("CRAM-MD5", silent, capa_known=False, host="h")  # unknown: try it
    with pytest.raises(AuthenticationFailed, match="does not offer APOP"):
        check_offered("APOP", silent, capa_known=False, host="h")

"""Mechanism choice and fall-back (bridge/pop3/mechanisms.py): pure rules, tested as a table."""

from __future__ import annotations

import pytest

from bridge.pop3.errors import (
    AuthenticationFailed,
    InsecureAuthRefused,
    LocalProtocolError,
    PermanentFailure,
    TemporaryFailure,
)
from bridge.pop3.mechanisms import (
    Offer,
    after_refusal,
    auto_order,
    check_allowed,
    falls_back,
    normalise,
)


def offer(*sasl: str, apop: bool = False, encrypted: bool = False, verified: bool = False) -> Offer:
    caps = {"SASL": sasl} if sasl else {}
    return Offer.of(caps, apop=apop, encrypted=encrypted, verified=verified)


@pytest.mark.parametrize(
    ("the_offer", "allow_plaintext", "expected"),
    [
        # Encrypted: the strongest first, APOP and USER last.
        (
            offer("PLAIN", "LOGIN", "CRAM-MD5", apop=True, encrypted=True),
            False,
            ["CRAM-MD5", "PLAIN", "LOGIN", "APOP", "USER"],
        ),
        (offer(encrypted=True), False, ["USER"]),
        # Verified TLS: PLAIN first (one exchange with its initial response), then the rest.
        (
            offer("PLAIN", "LOGIN", "CRAM-MD5", apop=True, encrypted=True, verified=True),
            False,
            ["PLAIN", "CRAM-MD5", "LOGIN", "APOP", "USER"],
        ),
        (offer("CRAM-MD5", encrypted=True, verified=True), False, ["CRAM-MD5", "USER"]),
        # "verified" without encryption means nothing: a plain link's order.
        (
            offer("PLAIN", "CRAM-MD5", apop=True, verified=True),
            True,
            ["CRAM-MD5", "APOP", "PLAIN", "USER"],
        ),
        # Plain link: APOP before anything that sends the password; those only when allowed.
        (offer("PLAIN", apop=True), False, ["APOP"]),
        (offer("PLAIN", apop=True), True, ["APOP", "PLAIN", "USER"]),
        (offer(apop=True), True, ["APOP", "USER"]),  # GNU mailutils, solid-pop3d
        (offer("CRAM-MD5"), False, ["CRAM-MD5"]),
        (offer("cram-md5", "plain"), True, ["CRAM-MD5", "PLAIN", "USER"]),
    ],
)
def test_auto_order(the_offer: Offer, allow_plaintext: bool, expected: list[str]) -> None:
    got = auto_order(the_offer, password=True, token=False, allow_plaintext=allow_plaintext)
    assert got == expected


def test_auto_order_with_a_token_and_without_secrets() -> None:
    assert auto_order(
        offer("OAUTHBEARER", "XOAUTH2"), password=False, token=True, allow_plaintext=False
    ) == ["OAUTHBEARER", "XOAUTH2"]
    assert auto_order(offer("OAUTHBEARER"), password=False, token=True, allow_plaintext=False) == [
        "OAUTHBEARER"
    ]
    # Microsoft 365 and Gmail take XOAUTH2 without announcing it.
    assert auto_order(offer(), password=False, token=True, allow_plaintext=False) == ["XOAUTH2"]
    with pytest.raises(LocalProtocolError, match="password or a token"):
        auto_order(offer(), password=False, token=False, allow_plaintext=True)


def test_plaintext_only_server_without_permission_is_refused_up_front() -> None:
    with pytest.raises(InsecureAuthRefused, match="in the clear"):
        auto_order(offer("PLAIN"), password=True, token=False, allow_plaintext=False, host="h")
    with pytest.raises(InsecureAuthRefused, match="USER would send credentials to h"):
        check_allowed("USER", encrypted=False, allow_plaintext=False, host="h")
    check_allowed("USER", encrypted=True, allow_plaintext=False, host="h")
    check_allowed("APOP", encrypted=False, allow_plaintext=False, host="h")


def test_a_refusal_skips_every_mechanism_that_checks_the_same_secret() -> None:
    order = ["CRAM-MD5", "PLAIN", "LOGIN", "APOP", "USER"]
    assert after_refusal(order, ["APOP"]) == ["CRAM-MD5", "PLAIN", "LOGIN", "USER"]
    # A wrong password is one failed attempt, not three.
    assert after_refusal(order, ["PLAIN"]) == ["CRAM-MD5", "APOP"]
    assert after_refusal(order, ["CRAM-MD5", "PLAIN", "APOP"]) == []
    assert after_refusal(["OAUTHBEARER", "XOAUTH2"], ["OAUTHBEARER"]) == []


def test_only_refusals_another_mechanism_could_pass_fall_back() -> None:
    assert falls_back(AuthenticationFailed("APOP refused: Bad login"))
    assert not falls_back(TemporaryFailure("[IN-USE] locked"))
    assert not falls_back(TemporaryFailure("[LOGIN-DELAY] wait", retry_after=60))
    assert not falls_back(PermanentFailure("[SYS/PERM] mailbox gone"))


def test_normalise() -> None:
    assert normalise("auto") == "AUTO"
    assert normalise("cram-md5") == "CRAM-MD5"
    with pytest.raises(LocalProtocolError, match="unknown mechanism 'NTLM'"):
        normalise("NTLM")

"""SASL mechanisms, APOP and the 255-octet initial-response rule (bridge/pop3/sasl.py)."""

from __future__ import annotations

import base64

import pytest

from bridge.pop3.errors import RemoteProtocolError
from bridge.pop3.sasl import (
    CramMD5,
    Login,
    OAuthBearer,
    Plain,
    XOAuth2,
    apop_digest,
    auth_command,
    decode_challenge,
    encode_response,
)


def test_apop_rfc1939_vector() -> None:
    assert (
        apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf")
        == "c4c9334bac560ecc979e58001b3e22fb"
    )


def test_cram_md5_rfc2195_vector() -> None:
    mech = CramMD5("tim", "tanstaaftanstaaf")
    challenge = b"<1896.697170952@postoffice.reston.mci.net>"
    assert mech.respond(challenge) == b"tim b913a602c7eda7a495b4e6e7334d3890"
    assert mech.initial_response() is None


def test_plain_rfc4616_layout() -> None:
    assert Plain("tim", "tanstaaf").initial_response() == b"\0tim\0tanstaaf"
    assert Plain("tim", "pw", authzid="admin").initial_response() == b"admin\0tim\0pw"
    assert "tanstaaf" not in repr(Plain("tim", "tanstaaf"))


def test_login_answers_in_order() -> None:
    mech = Login("bob", "pw")
    assert mech.respond(b"Username:") == b"bob"
    assert mech.respond(b"Password:") == b"pw"
    with pytest.raises(RemoteProtocolError):
        mech.respond(b"More:")


def test_xoauth2_format_and_error_answer() -> None:
    mech = XOAuth2("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
    assert mech.initial_response() == (
        b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
        b"\x01\x01"
    )
    assert mech.respond(b'{"status":"401"}') == b""
    assert mech.error == b'{"status":"401"}'


def test_oauthbearer_rfc7628_layout() -> None:
    mech = OAuthBearer(
        "user@example.com", "vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg==", "server.example.com", 143
    )
    assert mech.initial_response() == (
        b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
        b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg==\x01\x01"
    )
    assert encode_response(mech.respond(b'{"status":"invalid_token"}')) == "AQ=="


def test_initial_response_inline_when_short() -> None:
    args = auth_command(Plain("a", "b"))
    assert args == ("PLAIN", base64.b64encode(b"\0a\0b").decode())


def test_empty_initial_response_is_equals_sign() -> None:
    class Empty:
        name = "EXTERNAL"

        def initial_response(self) -> bytes | None:
            return b""

        def respond(self, challenge: bytes) -> bytes:
            return b""

    assert auth_command(Empty()) == ("EXTERNAL", "=")


def test_initial_response_dropped_over_255_octets() -> None:
    token = "t" * 1500  # real access tokens are over a kilobyte (the Microsoft 365 two-step)
    assert auth_command(XOAuth2("u@example.com", token)) == ("XOAUTH2",)
    # Exactly at the edge: "AUTH PLAIN " + b64 + CRLF
    for pw_len in range(150, 200):
        args = auth_command(Plain("u", "p" * pw_len))
        line = ("AUTH " + " ".join(args) + "\r\n").encode()
        assert len(line) <= 255
        if len(args) == 1:
            full = len("AUTH PLAIN " + encode_response(b"\0u\0" + b"p" * pw_len) + "\r\n")
            assert full > 255


def test_no_initial_response_without_sasl_capability() -> None:
    assert auth_command(Plain("a", "b"), allow_initial_response=False) == ("PLAIN",)
    assert auth_command(Login("a", "b")) == ("LOGIN",)


@pytest.mark.parametrize("bad", ["not base64!", "QUJD=", "QU JD", "é"])
def test_strict_challenge_decoding(bad: str) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_challenge(bad)


def test_challenge_decoding() -> None:
    assert decode_challenge("") == b""
    assert decode_challenge("VXNlcm5hbWU6") == b"Username:"

"""Our signatures against the `standardwebhooks` reference verifier."""

from __future__ import annotations

import base64
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bridge.delivery.signing import InvalidSecret, SigningKeys, decode_secret, sign, verify
from tests.support.receiver import new_secret


def headers(msg_id: str, ts: int, sig: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


def test_reference_library_accepts_our_signature() -> None:
    secret = new_secret()
    body = b'{"type":"message.received","data":{"subject":"h\xc3\xa9llo"}}'
    ts = int(time.time())
    sig = sign([secret], "msg_abc", ts, body)
    assert sig.startswith("v1,") and " " not in sig
    assert Webhook(secret).verify(body, headers("msg_abc", ts, sig)) == {
        "type": "message.received",
        "data": {"subject": "héllo"},
    }


def test_signature_matches_reference_sign_exactly() -> None:
    secret = new_secret()
    ts = int(time.time())
    from datetime import UTC, datetime

    expected = Webhook(secret).sign("msg_1", datetime.fromtimestamp(ts, tz=UTC), "{}")
    assert sign([secret], "msg_1", ts, b"{}") == expected


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=2048).map(lambda b: base64.b64encode(b)),
    msg_id=st.from_regex(r"msg_[0-9a-f]{1,32}", fullmatch=True),
    key=st.binary(min_size=1, max_size=64),
)
def test_reference_verifies_arbitrary_bodies_ids_and_keys(
    body: bytes, msg_id: str, key: bytes
) -> None:
    secret = "whsec_" + base64.b64encode(key).decode()
    ts = int(time.time())
    sig = sign([secret], msg_id, ts, body)
    Webhook(secret).verify(body, headers(msg_id, ts, sig), json_parse=False)
    assert verify([secret], msg_id, ts, body, sig)


def test_rotation_every_secret_signs_and_any_one_verifies() -> None:
    old, new, other = new_secret(), new_secret(), new_secret()
    body = b'{"n":1}'
    ts = int(time.time())
    sig = sign([old, new], "msg_rot", ts, body)
    parts = sig.split(" ")
    assert len(parts) == 2 and all(p.startswith("v1,") for p in parts)
    assert parts[0] != parts[1]
    for secret in (old, new):
        Webhook(secret).verify(body, headers("msg_rot", ts, sig))
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers("msg_rot", ts, sig))


def test_signature_covers_id_timestamp_and_body() -> None:
    secret = new_secret()
    ts = int(time.time())
    sig = sign([secret], "msg_a", ts, b"{}")
    hook = Webhook(secret)
    for bad in (
        headers("msg_b", ts, sig),
        headers("msg_a", ts + 1, sig),
    ):
        with pytest.raises(WebhookVerificationError):
            hook.verify(b"{}", bad)
    with pytest.raises(WebhookVerificationError):
        hook.verify(b'{"x":1}', headers("msg_a", ts, sig))
    assert not verify([secret], "msg_a", ts, b"{ }", sig)


def test_prefixless_and_unpadded_secrets_decode_like_the_reference() -> None:
    key = os.urandom(31)  # length not a multiple of 3: base64 has padding to drop
    b64 = base64.b64encode(key).decode()
    assert b64.endswith("=")
    for form in ("whsec_" + b64, b64, "whsec_" + b64.rstrip("=")):
        assert decode_secret(form) == key
    ts = int(time.time())
    sig = sign(["whsec_" + b64.rstrip("=")], "msg_p", ts, b"{}")
    Webhook("whsec_" + b64).verify(b"{}", headers("msg_p", ts, sig))


def test_presigned_keys_give_the_same_result_repeatedly() -> None:
    keys = SigningKeys([new_secret(), new_secret()])
    first = keys.sign("msg_r", 1700000000, b"body")
    assert keys.sign("msg_r", 1700000000, b"body") == first  # copied state, not consumed
    assert keys.sign("msg_r", 1700000001, b"body") != first
    assert "whsec" not in repr(keys)


@pytest.mark.parametrize("bad", ["", "whsec_", "whsec_not base64!!", "whsec_@@@@"])
def test_invalid_secret_is_rejected_without_echoing_it(bad: str) -> None:
    with pytest.raises(InvalidSecret) as info:
        sign([bad], "msg", 1, b"{}")
    text = str(info.value)
    assert "whsec_" in text  # tells the user the expected format
    payload = bad.removeprefix("whsec_")
    if payload:
        assert payload not in text


def test_no_secrets_and_bare_string_are_refused() -> None:
    with pytest.raises(InvalidSecret):
        SigningKeys([])
    with pytest.raises(TypeError):
        SigningKeys(new_secret())

"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.

Secrets arrive as `whsec_<base64>` (the prefix is optional, padding too, matching what the
reference verifier accepts). Rotation is a list: every secret signs and the signatures are
joined by spaces, so a receiver that knows either the old or the new secret accepts the request
while the change rolls out.

The body is hashed as the exact bytes that go on the wire (never re-encoded) and the HMAC keys
are set up once per target (`SigningKeys`): the per-request cost is then two `update` calls
per secret on a copied HMAC state.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

__all__ = ["SECRET_PREFIX", "InvalidSecret", "SigningKeys", "decode_secret", "sign", "verify"]

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format marker, not a secret


class InvalidSecret(ValueError):
    """A webhook secret is not usable. The message never repeats the secret itself."""


def decode_secret(secret: str) -> bytes:
    """The HMAC key of one `whsec_<base64>` secret."""
    text = secret.strip()
    if text.startswith(SECRET_PREFIX):
        text = text[len(SECRET_PREFIX) :]
    if not text:
        raise InvalidSecret("webhook secret is empty; expected 'whsec_' followed by base64")
    try:
        # Unpadded base64 is common in the wild; extra padding is ignored by the decoder.
        key = base64.b64decode(text + "==", validate=False)
        # validate=False silently drops junk characters; re-check so a typo is reported
        # instead of signing with a different key than the receiver has.
        if base64.b64encode(key).rstrip(b"=") != text.rstrip("=").encode("ascii"):
            raise ValueError
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InvalidSecret(
            "webhook secret is not valid base64 after the 'whsec_' prefix "
            f'({len(text)} characters); generate one with: python -c "import os,base64;'
            "print('whsec_'+base64.b64encode(os.urandom(32)).decode())\""
        ) from None
    if not key:
        raise InvalidSecret("webhook secret decodes to an empty key")
    return key


class SigningKeys:
    """Pre-keyed HMAC states for a rotation list of secrets; immutable after construction."""

    __slots__ = ("_states",)

    def __init__(self, secrets: Sequence[str]) -> None:
        if isinstance(secrets, str):
            # A bare string would be iterated character by character: a silent wrong key.
            raise TypeError("secrets must be a sequence of secrets, not a single string")
        if not secrets:
            raise InvalidSecret("at least one webhook secret is required to sign requests")
        self._states = tuple(hmac.new(decode_secret(s), digestmod=hashlib.sha256) for s in secrets)

    def __len__(self) -> int:
        return len(self._states)

    def __repr__(self) -> str:
        return f"SigningKeys(<{len(self._states)} secret(s)>)"

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        prefix = f"{msg_id}.{timestamp}.".encode()
        parts = []
        for state in self._states:
            h = state.copy()
            h.update(prefix)
            h.update(body)
            parts.append("v1," + base64.b64encode(h.digest()).decode("ascii"))
        return " ".join(parts)


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: one `v1,<b64>` per secret, space-separated."""
    return SigningKeys(secrets).sign(msg_id, timestamp, body)


def verify(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes, signature_header: str
) -> bool:
    """True when any `v1` signature in the header matches any of `secrets`.

    For our own diagnostics only: it does not check the timestamp's age; real receivers (and our
    tests) use the `standardwebhooks` reference library for that.
    """
    expected = {
        base64.b64decode(part[3:])
        for part in SigningKeys(secrets).sign(msg_id, timestamp, body).split()
    }
    for part in signature_header.split():
        version, _, b64 = part.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            continue
        if any(hmac.compare_digest(given, e) for e in expected):
            return True
    return False

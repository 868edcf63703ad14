"""Link URLs: what is signed, how, and how a request is checked (pure, no I/O).

A link is `<public_url>/a/<msg_id>/<part>?expires=<unix seconds>&signature=<sig>` where `part`
is the attachment's index in the payload's `data.attachments` (0-based) or `raw` for the whole
message. The signature is HMAC-SHA256, keyed with the first configured signing key, over the
path relative to `public_url` (`/a/<msg_id>/<part>`), a newline and the expiry as written in the
URL; it travels as unpadded base64url. Signing the path relative to `public_url` keeps links
valid whether or not an ingress strips a path prefix on the way in.

Every configured key verifies (rotation: put the new key first, keep the old one until the
links it signed have expired), each compared with `hmac.compare_digest`. The order of checks
is fixed so that nothing leaks to someone without a key: a malformed path or query is refused
the same way as a wrong signature (403), only a correctly signed request learns that its link
expired, and only a correctly signed, unexpired one learns whether the content exists.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MIN_KEY_LENGTH", "RAW", "LinkSigner", "LinkVerdict", "link_path", "parse_path"]

RAW = -1  # the part number of the whole raw message
MIN_KEY_LENGTH = 32
_MSG_ID = re.compile(r"msg_[0-9a-f]{32}")
_PART = re.compile(r"raw|0|[1-9][0-9]{0,5}")
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")
_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")


class LinkVerdict(enum.Enum):
    OK = "ok"
    FORBIDDEN = "forbidden"  # missing, malformed or wrong signature
    EXPIRED = "expired"  # correctly signed, past its expiry


def link_path(msg_id: str, part: int) -> str:
    return f"/a/{msg_id}/{'raw' if part == RAW else part}"


def parse_path(path: str) -> tuple[str, int] | None:
    """(msg_id, part) of `/a/<msg_id>/<part>`; None for anything else."""
    pieces = path.split("/")
    if len(pieces) != 4 or pieces[0] or pieces[1] != "a":
        return None
    msg_id, part = pieces[2], pieces[3]
    if _MSG_ID.fullmatch(msg_id) is None or _PART.fullmatch(part) is None:
        return None
    return msg_id, RAW if part == "raw" else int(part)


@dataclass(frozen=True)
class LinkSigner:
    """Mints and checks links; `keys[0]` signs, every key verifies."""

    public_url: str
    keys: Sequence[bytes]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("at least one signing key is needed")
        for key in self.keys:
            if len(key) < MIN_KEY_LENGTH:
                raise ValueError(f"a link signing key must be at least {MIN_KEY_LENGTH} bytes")
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))

    def url(self, msg_id: str, part: int, expires: int) -> str:
        path = link_path(msg_id, part)
        return f"{self.public_url}{path}?expires={expires}&signature={self.sign(path, expires)}"

    def sign(self, path: str, expires: int, key: bytes | None = None) -> str:
        mac = hmac.new(key or self.keys[0], f"{path}\n{expires}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")

    def check(
        self, path: str, expires: str | None, signature: str | None, now: float
    ) -> LinkVerdict:
        """Whether a request for `path` (relative to public_url) may be served at `now`."""
        if (
            expires is None
            or signature is None
            or _EXPIRES.fullmatch(expires) is None
            or _SIGNATURE.fullmatch(signature) is None
        ):
            return LinkVerdict.FORBIDDEN
        given = signature.encode("ascii")
        valid = False
        for key in self.keys:  # no early exit: the time taken does not say which key matched
            valid |= hmac.compare_digest(self.sign(path, int(expires), key).encode(), given)
        if not valid:
            return LinkVerdict.FORBIDDEN
        return LinkVerdict.OK if now < int(expires) else LinkVerdict.EXPIRED

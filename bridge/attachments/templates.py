"""Links in webhook bodies: placeholders at fetch, signed URLs at every delivery.

A body with links is stored as a template: `TEMPLATE`, a random nonce, then the JSON body in
which each link field (`url`, `expires_at`, `raw_url`, `raw_expires_at`) holds a placeholder
string. The delivery worker renders it with the expiry the store holds for the message. Two
things follow: every retry signs the same bytes (the expiry is fixed when the message is
recorded), and `pop3bridge dlq replay` mints fresh links by moving that stored expiry, without
rebuilding the body from the raw message.

Placeholders are `\\x00<nonce>:<part>:<field>\\x00`, which orjson writes as
`"\\u0000<nonce>:...\\u0000"`. The nonce is 64 random bits chosen after the message arrived, so
a message cannot carry a string that would be rendered as a link.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bridge.attachments.signing import RAW, LinkSigner
from bridge.store.base import TEMPLATE, LinkContent

__all__ = ["LinkMinter", "is_template", "new_nonce", "rfc3339", "template_payload"]

_NONCE_CHARS = 16
_PLACEHOLDER = re.compile(rb'"\\u0000([0-9a-f]{16}):(-1|[0-9]+):(url|exp)\\u0000"')


def is_template(payload: bytes) -> bool:
    return payload[:1] == TEMPLATE


def rfc3339(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class LinkMinter:
    """What the configuration's `attachments:` section gives the rest of the bridge."""

    signer: LinkSigner
    ttl: float

    def expiry(self, now: float) -> int:
        return int(now + self.ttl)

    def add_links(
        self,
        data: dict[str, Any],
        contents: Sequence[Any],
        raw: bytes | None,
        *,
        nonce: str,
    ) -> tuple[dict[str, Any], tuple[LinkContent, ...]]:
        """Placeholders into `data` for every above-limit attachment (`mail.Content` items)
        and, when `raw` is given, for the raw message; the matching `LinkContent`s."""
        links: list[LinkContent] = []
        attachments = data.get("attachments") or []
        for content in contents:
            item = attachments[content.index]
            item["url"] = _placeholder(nonce, content.index, "url")
            item["expires_at"] = _placeholder(nonce, content.index, "exp")
            links.append(
                LinkContent(
                    part=content.index,
                    size=content.size,
                    sha256=item["sha256"],
                    content_type=item["content_type"],
                    filename=item["filename"],
                    chunks=content.chunks,
                )
            )
        if raw is not None:
            out: dict[str, Any] = {}
            for key, value in data.items():
                out[key] = value
                if key == "raw":
                    out["raw_url"] = _placeholder(nonce, RAW, "url")
                    out["raw_expires_at"] = _placeholder(nonce, RAW, "exp")
            data = out
            links.append(
                LinkContent(
                    part=RAW,
                    size=len(raw),
                    sha256=hashlib.sha256(raw).hexdigest(),
                    content_type="message/rfc822",
                    filename=None,
                    chunks=_Slices(raw),
                )
            )
        return data, tuple(links)

    def render(self, payload: bytes, msg_id: str, expires: float | None) -> bytes:
        """The webhook body a template stands for, with links that expire at `expires`."""
        if not is_template(payload):
            return payload
        if expires is None:
            raise ValueError(
                f"the link content of {msg_id} is gone from the store; the body cannot be built"
            )
        at = int(expires)
        nonce = payload[1 : 1 + _NONCE_CHARS]
        body = payload[1 + _NONCE_CHARS :]

        def link(match: re.Match[bytes]) -> bytes:
            if match[1] != nonce:
                return match[0]
            if match[3] == b"exp":
                return f'"{rfc3339(at)}"'.encode()
            return orjson.dumps(self.signer.url(msg_id, int(match[2]), at))

        return _PLACEHOLDER.sub(link, body)


def new_nonce() -> str:
    return secrets.token_hex(_NONCE_CHARS // 2)


def template_payload(nonce: str, body: bytes) -> bytes:
    return TEMPLATE + nonce.encode("ascii") + body


def _placeholder(nonce: str, part: int, field: str) -> str:
    return f"\x00{nonce}:{part}:{field}\x00"


@dataclass(frozen=True)
class _Slices:
    """`LinkContent.chunks` of bytes already in memory (the raw message)."""

    data: bytes

    def __call__(self, size: int) -> Iterator[bytes]:
        view = memoryview(self.data)
        for at in range(0, len(view), size):
            yield bytes(view[at : at + size])

"""Messages with attachments of chosen sizes, and a `LinkMinter` with a test key."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from bridge.attachments.signing import LinkSigner
from bridge.attachments.templates import LinkMinter
from bridge.outbox import outbox_row
from bridge.store.base import NewMessage

KEY = b"k" * 40
OLD_KEY = b"o" * 40


def minter(public_url: str = "https://files.example.test/p3b", ttl: float = 3600.0) -> LinkMinter:
    return LinkMinter(LinkSigner(public_url=public_url, keys=[KEY, OLD_KEY]), ttl)


@dataclass
class Part:
    filename: str
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def message(*parts: Part, text: str = "see attached") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.test>"
    msg["To"] = "bob@example.test"
    msg["Subject"] = "attachments"
    msg["Message-ID"] = f"<{os.urandom(6).hex()}@example.test>"
    msg.set_content(text)
    for p in parts:
        maintype, subtype = p.content_type.split("/")
        msg.add_attachment(p.data, maintype=maintype, subtype=subtype, filename=p.filename)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def row(raw: bytes, *, now: float = 1.0, limit: int = 1024 * 1024, **options: Any) -> NewMessage:
    """`outbox_row` for account "acct", UIDL "u" (unless given), webhook "main"."""
    options.setdefault("uidl", "u")
    options.setdefault("include_raw", False)
    return outbox_row(
        raw,
        account="acct",
        size=len(raw),
        webhook="main",
        now=now,
        attachment_inline_limit=limit,
        **options,
    )

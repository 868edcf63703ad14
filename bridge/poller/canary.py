"""The freshness canary: a message of our own sent to a polled mailbox, timed until we fetch it.

Why
---
A poller that is "up" can still have stopped receiving mail: the provider's filter changed, a
forward broke, the mailbox is full. Only mail that actually travels the path proves it works.
With `accounts[].canary` the bridge submits a small message over SMTP or LMTP every `every`,
recognises it when the poll fetches it, and records the time from submission to fetch. A canary
not fetched within `max_age` makes the account "canary stale" on `/status` and in
`pop3bridge_canary_age_seconds`, whatever the webhook is doing.

Recognition is stateless and cannot be forged
--------------------------------------------
The marker header carries `<submitted unix ms>.<nonce>.<tag>`, where the tag is an HMAC-SHA256
over the account name, the time and the nonce, keyed with the account's canary key. A canary is
recognised only when its tag verifies, so:
- anyone can send mail with an `X-Pop3bridge-Canary` header, but only a verified one is
  swallowed (not POSTed, deleted from the server); a forged one is delivered like any mail and
  a warning is logged;
- no store table is needed: a restarted process or another replica recognises canaries sent
  before, and the submission time comes from the header itself, so the round trip is exact.

A canary is never recorded in the outbox nor marked seen: the poll that fetches it sends DELE for
it (even with `on_delivered: keep`: it is ours), and if that session's QUIT does not commit, the
next poll fetches and deletes it again. Counting a round trip twice is avoided by remembering the
nonces already counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import formatdate, make_msgid
from urllib.parse import urlsplit

from bridge.records import record

__all__ = [
    "HEADER",
    "CanaryError",
    "CanaryKey",
    "CanaryOptions",
    "CanaryState",
    "Tracker",
    "canary_message",
    "find_canary",
    "submit",
]

log = logging.getLogger(__name__)

HEADER = "X-Pop3bridge-Canary"
# The header must be in the header block (before the first empty line) to count; matched on the
# raw bytes so recognition costs one regex search over the headers, not a MIME parse.
_FIELD = re.compile(
    rb"(?im)^X-Pop3bridge-Canary:[ \t]*(\d{1,16})\.([0-9a-f]{32})\.([0-9a-f]{64})[ \t]*\r?$"
)
# The blank line that ends the header block, found from the LF of the line before it: a pattern
# that starts with a literal is searched from each LF, where `\r?\n\r?\n` was tried at every
# octet (0.5 against 5.2 us for a 5 KB bench message; `find_canary` runs on every message of
# every account whose webhook has a secret).
_HEADER_END = re.compile(rb"\n\r?\n")


def _header_block(raw: bytes) -> bytes:
    """`raw` up to the blank line that ends its headers: through the CR of a CRLF line end,
    through the LF of a bare-LF one (the whole of `raw` when there is no blank line)."""
    end = _HEADER_END.search(raw)
    if end is None:
        return raw
    lf = end.start()
    return raw[: lf if lf and raw[lf - 1] == 0x0D else lf + 1]


class CanaryError(Exception):
    """The canary could not be submitted (SMTP/LMTP refused or unreachable)."""


@record
class CanaryOptions:
    url: str  # smtp://host:port or lmtp://host:port
    every: float = 900.0
    max_age: float = 300.0
    to: str = ""
    sender: str = "pop3bridge-canary@localhost"
    timeout: float = 30.0


@record
class CanaryKey:
    """The keys canaries are tagged with; the first signs, every one verifies (rotation)."""

    keys: tuple[bytes, ...]

    def tag(self, account: str, millis: int, nonce: str, key: bytes | None = None) -> str:
        msg = f"{account}\0{millis}\0{nonce}".encode()
        return hmac.new(key or self.keys[0], msg, hashlib.sha256).hexdigest()

    def verify(self, account: str, millis: int, nonce: str, tag: str) -> bool:
        return any(hmac.compare_digest(self.tag(account, millis, nonce, k), tag) for k in self.keys)

    @classmethod
    def derive(cls, secrets_: Iterable[str]) -> CanaryKey:
        """Keys derived from the account's webhook secrets: nothing new to configure or store,
        and a receiver cannot use them for anything else (a distinct HMAC label)."""
        keys = tuple(
            hmac.new(s.encode(), b"pop3bridge canary v1", hashlib.sha256).digest() for s in secrets_
        )
        if not keys:
            raise ValueError("a canary key needs at least one secret")
        return cls(keys)


@record
class FoundCanary:
    nonce: str
    submitted_at: float


def canary_message(
    account: str, key: CanaryKey, options: CanaryOptions, now: float
) -> tuple[bytes, str]:
    """(RFC 5322 bytes, nonce) of one canary."""
    millis = int(now * 1000)
    nonce = secrets.token_hex(16)
    tag = key.tag(account, millis, nonce)
    to = options.to or "undisclosed-recipients:;"
    lines = [
        f"From: pop3bridge canary <{options.sender}>",
        f"To: {to}",
        f"Subject: pop3bridge freshness canary for {account}",
        f"Date: {formatdate(now, localtime=False, usegmt=True)}",
        f"Message-ID: {make_msgid('canary')}",
        f"{HEADER}: {millis}.{nonce}.{tag}",
        "Auto-Submitted: auto-generated",
        "Precedence: bulk",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "This message measures how long mail takes to reach pop3bridge.",
        "pop3bridge deletes it when it fetches it; it is never delivered to a webhook.",
        "",
    ]
    return "\r\n".join(lines).encode("ascii"), nonce


def find_canary(raw: bytes, account: str, key: CanaryKey) -> FoundCanary | None:
    """The verified canary in `raw`'s header block, else None (a forged one is logged)."""
    head = _header_block(raw)
    if b"anary" not in head:  # the common case: no marker at all, no regex run
        return None
    match = _FIELD.search(head)
    if match is None:
        return None
    millis, nonce, tag = int(match[1]), match[2].decode(), match[3].decode()
    if not key.verify(account, millis, nonce, tag):
        log.warning(
            "a message carries a canary header that does not verify; delivered as ordinary mail",
            extra={"account": account},
        )
        return None
    return FoundCanary(nonce, millis / 1000.0)


def _send(options: CanaryOptions, message: bytes, to: str) -> None:
    import smtplib  # here: a run without canaries never needs it (~5 M instructions at start-up)

    parts = urlsplit(options.url)
    scheme = parts.scheme.lower()
    host = parts.hostname or "localhost"
    if scheme not in ("smtp", "lmtp"):
        raise CanaryError(f"canary.smtp must be smtp://host:port or lmtp://host:port, not {scheme}")
    port = parts.port or (25 if scheme == "smtp" else 24)
    client: smtplib.SMTP
    try:
        if scheme == "lmtp":
            client = smtplib.LMTP(host, port, timeout=options.timeout)
        else:
            client = smtplib.SMTP(host, port, timeout=options.timeout)
        with client:
            if scheme == "smtp":
                client.ehlo_or_helo_if_needed()
                if client.has_extn("starttls"):
                    client.starttls()
            refused = client.sendmail(options.sender, [to], message)
    except (OSError, smtplib.SMTPException) as exc:
        raise CanaryError(
            f"cannot submit the canary to {scheme}://{host}:{port}: {type(exc).__name__}: {exc}"
        ) from None
    if refused:
        raise CanaryError(f"{scheme}://{host}:{port} refused the canary recipient {to}")


async def submit(options: CanaryOptions, message: bytes, to: str) -> None:
    """Submit over SMTP/LMTP (stdlib smtplib, in a thread: one small message per interval)."""
    await asyncio.to_thread(_send, options, message, to)


@dataclass(slots=True)
class CanaryState:
    """What the status page and metrics show for one account's canary."""

    outstanding: dict[str, float] = field(default_factory=dict)  # nonce -> submitted_at
    last_submitted_at: float | None = None
    last_fetched_at: float | None = None
    last_round_trip: float | None = None
    last_error: str | None = None

    def age(self, now: float) -> float:
        """How long the oldest canary not yet fetched has been travelling (0 when none)."""
        if not self.outstanding:
            return 0.0
        return max(0.0, now - min(self.outstanding.values()))


class Tracker:
    """Per-account canary state of this process: submissions, fetches and round trips."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.states: dict[str, CanaryState] = {}
        self._counted: set[str] = set()

    def state(self, account: str) -> CanaryState:
        return self.states.setdefault(account, CanaryState())

    def submitted(self, account: str, nonce: str, at: float) -> None:
        st = self.state(account)
        st.outstanding[nonce] = at
        st.last_submitted_at = at
        st.last_error = None

    def failed(self, account: str, error: str) -> None:
        self.state(account).last_error = error

    def fetched(self, account: str, found: FoundCanary, at: float) -> float | None:
        """Record a fetch; the round trip, or None when this canary was counted already."""
        st = self.state(account)
        st.outstanding.pop(found.nonce, None)
        if found.nonce in self._counted:
            return None
        self._counted.add(found.nonce)
        if len(self._counted) > 10_000:  # bounded: old nonces never come back after deletion
            self._counted.clear()
            self._counted.add(found.nonce)
        st.last_fetched_at = at
        st.last_round_trip = max(0.0, at - found.submitted_at)
        return st.last_round_trip

    def due(self, account: str, every: float, now: float) -> bool:
        st = self.states.get(account)
        return st is None or st.last_submitted_at is None or now - st.last_submitted_at >= every

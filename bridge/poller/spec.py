"""What the poller needs to know about one account, independent of how the config file spells it.

The poller's modules take these small frozen records instead of the pydantic settings models, so
a session can be driven from a test, from `peek`, from `demo` or from an account row in the
database without building a whole `Settings`. `bridge.poller.app` is the one place that maps the
configuration onto them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from bridge.attachments.templates import LinkMinter
from bridge.mail import DEFAULT_OPTIONS, MailOptions
from bridge.poller.canary import CanaryKey, CanaryOptions
from bridge.pop3.client import TLSMode
from bridge.records import record

__all__ = ["AccountSpec", "FetchOptions"]

OnDelivered = Literal["keep", "delete"]
Initial = Literal["all", "new"]
TokenGetter = Callable[[], Awaitable[str]]


@record
class FetchOptions:
    """How a message becomes a payload; comes from the account's webhook."""

    attachment_inline_limit: int = 1024 * 1024
    include_raw: bool = False
    # The webhook has a delivery format: every message is kept raw until delivery, whatever
    # its size, because the format carries every attachment's bytes.
    reshaped: bool = False
    # The account's own payload options (plus-address separator, trusted provider headers).
    options: MailOptions = DEFAULT_OPTIONS
    links: LinkMinter | None = None  # big attachments by signed link (`attachments:` section)


@dataclass(frozen=True)
class AccountSpec:
    """One mailbox to poll. Secrets are kept out of `repr` so a logged spec leaks nothing."""

    name: str
    host: str
    username: str
    webhook: str
    port: int | None = None
    tls: TLSMode = "implicit"
    password: str | None = field(default=None, repr=False)
    auth: str = "auto"
    ca_file: str | None = None
    insecure: bool = False
    tls_resume: bool = True
    allow_plaintext: bool = False
    pipelining: bool = True
    connect_timeout: float = 30.0
    read_timeout: float = 120.0
    poll_interval: float = 60.0
    on_delivered: OnDelivered = "keep"
    initial: Initial = "all"
    max_message_size: int = 50 * 1024 * 1024
    enabled: bool = True
    fetch: FetchOptions = field(default_factory=FetchOptions)
    # OAuth2: an async callable returning a fresh access token, plus one that forgets the cached
    # token so a refused login can be retried once with a new one.
    token: TokenGetter | None = field(default=None, repr=False, compare=False)
    # A digest of the OAuth settings (refresh token included), so that a changed grant makes a
    # different spec: the scheduler restarts a loop parked on `invalid_grant` when it changes.
    oauth_key: str = field(default="", repr=False)
    # Freshness canary (see `bridge.poller.canary`); the key recognises canaries even when
    # `canary` is unset, so ones sent before a config change are still swallowed.
    canary: CanaryOptions | None = None
    canary_key: CanaryKey | None = field(default=None, repr=False, compare=False)
    invalidate_token: Callable[[], None] | None = field(default=None, repr=False, compare=False)

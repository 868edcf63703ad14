"""Settings -> the delivery side every feature runs: the store, the pooled sender, the routes.

The poller and the proxy's tap both record messages into the outbox and run a
`bridge.delivery.worker.DeliveryWorker` over it, so what turns the configuration into those
parts lives here, between the four lower packages and the two features, rather than in one
feature that the other would then have to reach into. It reads the settings by attribute only
(it never imports `bridge.config`), so tests can hand it small stand-ins. Secrets leave their
`SecretStr` wrappers here on their way into the sender, each registered with the log redactor
first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

from bridge.attachments.signing import LinkSigner
from bridge.attachments.templates import LinkMinter
from bridge.delivery.worker import DEFAULT_CLAIM_SECONDS, WebhookRoute
from bridge.mail import MailOptions
from bridge.mail.formats import FormatOptions
from bridge.outbox import DeferredPayload, ParseLimits, ParsePool
from bridge.outbox._early import discard_forked
from bridge.store import Store, open_store
from bridge.store.base import OutboxItem

__all__ = [
    "CLAIM_MARGIN",
    "DeliveryRuntime",
    "body_builder",
    "claim_seconds",
    "format_options",
    "link_minter",
    "mail_options",
    "record_delivery",
    "retry_policy",
    "secret_value",
    "start_parse_pool",
    "webhook_target",
]

# Slack on top of the sends a delivery claim must cover: store writes, event-loop stalls.
CLAIM_MARGIN = 20.0


def secret_value(value: Any) -> str | None:
    """The plain text of a `SecretStr` (or str); registered with the log redactor."""
    if value is None:
        return None
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    if text:
        from bridge.ops.logging import register_secret

        register_secret(text)
    return str(text)


def claim_seconds(webhook_timeouts: Iterable[float]) -> float:
    """How long a delivery claim lasts: as short as is safe, because after a crash the rows
    the dead process had claimed wait this long before anyone sends them.

    A worker lets a claimed row in to be sent only while at most twice as many rows as it has
    send slots are let in and unsent (`bridge.delivery.worker._Window`), so a row waits for at
    most one other send before its own, and each send is bounded by its webhook's total
    timeout. A row let in more than a second after its claim (a claim made ahead, while the
    previous one is sent) is renewed on the way in (`renew_claims`), so the bound holds from
    there, not from the claim. A claim that runs out early costs at worst a duplicate with the
    same webhook-id.
    """
    longest = max(webhook_timeouts, default=None)
    if longest is None:
        return DEFAULT_CLAIM_SECONDS
    return 2 * longest + CLAIM_MARGIN


def webhook_target(hook: Any) -> Any:
    """The sender's `WebhookTarget` for one configured webhook (secrets unwrapped here)."""
    from bridge.delivery.sender import WebhookTarget, basic_auth_forms
    from bridge.ops.logging import register_secret

    raw = hook.secret
    secrets = raw if isinstance(raw, list | tuple) else [raw]
    headers: Mapping[str, Any] = getattr(hook, "headers", None) or {}
    for form in basic_auth_forms(str(hook.url)):
        register_secret(form)  # the Authorization: Basic value aiohttp derives from the URL
    return WebhookTarget(
        name=hook.name,
        url=str(hook.url),
        secrets=tuple(s for s in (secret_value(x) for x in secrets) if s),
        timeout=float(getattr(hook, "timeout", 10.0)),
        headers={k: secret_value(v) or "" for k, v in headers.items()},
        ca_file=getattr(hook, "ca_file", None),
    )


def body_builder(
    hook: Any, pool: ParsePool | None = None, links: LinkMinter | None = None
) -> DeferredPayload:
    """Builds the bodies of rows the poller recorded raw, with this webhook's payload options
    (its delivery format among them; the account's options travel in the row), and renders
    the link templates of rows with big attachments."""
    return DeferredPayload(
        attachment_inline_limit=int(getattr(hook, "attachment_inline_limit", 1024 * 1024)),
        include_raw=bool(getattr(hook, "include_raw", False)),
        pool=pool,
        format=format_options(hook),
        links=links,
    )


def link_minter(settings: Any) -> LinkMinter | None:
    """The `attachments:` section as a `LinkMinter`; None when links are not enabled."""
    section = getattr(settings, "attachments", None)
    if section is None or not getattr(section, "enabled", False):
        return None
    raw = section.signing_key
    keys = raw if isinstance(raw, list | tuple) else [raw]
    secrets = [s for s in (secret_value(k) for k in keys) if s]
    signer = LinkSigner(public_url=str(section.public_url), keys=[k.encode() for k in secrets])
    return LinkMinter(signer=signer, ttl=float(section.url_ttl))


def format_options(hook: Any) -> FormatOptions:
    """The webhook's delivery format (`bridge.mail.formats`); the signing key unwrapped here."""
    name = str(getattr(hook, "format", "standard") or "standard")
    if name == "standard":
        return FormatOptions()
    mime = False
    if name == "mailgun":
        mime = bool(getattr(getattr(hook, "mailgun", None), "mime", False))
    elif name == "sendgrid":
        mime = bool(getattr(getattr(hook, "sendgrid", None), "raw", False))
    return FormatOptions(
        name=name,  # type: ignore[arg-type]  # the config's Literal
        mime=mime,
        include_raw=bool(getattr(hook, "include_raw", False)),
        signing_key=secret_value(getattr(hook, "mailgun_signing_key", None)) or "",
    )


def mail_options(account: Any) -> MailOptions:
    """An account's payload options: plus-address separator, trusted provider headers."""
    trusted = getattr(account, "trusted_authserv_id", None)
    ids = (trusted,) if isinstance(trusted, str) else tuple(trusted or ())
    return MailOptions(
        mailbox_hash_separator=str(getattr(account, "mailbox_hash_separator", "+") or "+"),
        trusted_authserv_ids=tuple(str(i) for i in ids),
        trust_spam_headers=bool(getattr(account, "trust_spam_headers", False)),
    )


def retry_policy(hook: Any) -> Any:
    """The webhook's `RetryPolicy`: library defaults unless the config caps attempts or delay."""
    from bridge.delivery.policy import RetryPolicy

    kwargs: dict[str, Any] = {}
    if getattr(hook, "max_attempts", None) is not None:
        kwargs["max_attempts"] = int(hook.max_attempts)
    if getattr(hook, "retry_max_delay", None) is not None:
        max_delay = float(hook.retry_max_delay)
        kwargs["max_delay"] = max_delay
        # A cap below the first back-off window (1 s) shrinks that window too, rather than
        # refusing a configuration the schema accepts.
        kwargs["initial"] = min(RetryPolicy.initial, max_delay)
    return RetryPolicy(**kwargs)


def record_delivery(item: OutboxItem, outcome: str, result: Any) -> None:
    """The worker's `on_result` hook: delivery metrics. Never raises (metrics never stop mail)."""
    # Imported here: `pop3bridge once` exposes no metrics and so skips prometheus_client
    # (11 ms of its start-up).
    from bridge.ops import metrics
    from bridge.ops.metrics import best_effort as _safe

    klass = metrics.status_class(getattr(result, "status", None))
    _safe(lambda: _count_delivery(outcome, klass))
    latency = getattr(result, "latency", None)
    if isinstance(latency, int | float):
        _safe(lambda: metrics.DELIVERY_LATENCY.observe(latency))
    if outcome == "dead":
        _safe(metrics.DEAD_LETTERS.inc)


_deliveries: Any = None  # metrics.Series(DELIVERIES), made at the first delivery


def _count_delivery(outcome: str, status_class: str) -> None:
    """One attempt on the deliveries counter, through a `metrics.Series` (called for every
    attempt; the metrics module is imported at the first one, not at start-up)."""
    global _deliveries
    if _deliveries is None:
        from bridge.ops import metrics

        _deliveries = metrics.Series(metrics.DELIVERIES)
    _deliveries(outcome, status_class).inc()


def start_parse_pool(settings: Any) -> ParsePool | None:
    """The parse workers (`poller.parse_workers`, with `parse_timeout` and
    `parse_memory_limit`), launching from a thread; None with 0 workers (parsing in this
    process). The caller closes the pool.

    `DeliveryRuntime` starts one itself; `pop3bridge once` starts it before importing the
    poller, so the parse worker (a new interpreter importing the parser, 100-250 ms)
    starts on the other core while this process imports the rest (bench/startup.py).
    """
    poller = settings.poller
    workers = int(getattr(poller, "parse_workers", 0) or 0)
    if workers <= 0:
        discard_forked()  # the worker `once` forked at start-up: not wanted
        return None
    default = ParseLimits()
    limits = ParseLimits(
        cpu_seconds=float(getattr(poller, "parse_timeout", default.cpu_seconds)),
        memory=int(getattr(poller, "parse_memory_limit", default.memory)),
    )
    return ParsePool(workers, limits)


class DeliveryRuntime:
    """Store + sender + routes for one process, built from settings.

    An async context manager: entering opens and migrates the store and (unless
    `with_sender=False`, for commands that only read the store) starts the parse workers
    (or uses `pool`, which its caller then closes) and opens the pooled sender and one
    `WebhookRoute` per webhook (with `defer_sender`, `open_sender()` does that part later);
    leaving closes them in reverse order.
    """

    def __init__(
        self,
        settings: Any,
        *,
        with_sender: bool = True,
        pool: ParsePool | None = None,
        defer_sender: bool = False,
    ) -> None:
        self.settings = settings
        self.with_sender = with_sender
        # Entering does not open the sender; `open_sender()` does, when there is something to
        # deliver (`once`: a run that finds nothing never imports aiohttp).
        self.defer_sender = defer_sender
        self._pool: ParsePool | None = None
        # A pool its caller started earlier (`start_parse_pool`) and closes itself.
        self._given_pool = pool
        self.url = str(settings.state.url)
        self.store: Store = open_store(self.url)
        self.sender: Any = None
        self.routes: dict[str, WebhookRoute] = {}
        self._stack = AsyncExitStack()
        self.webhooks: dict[str, Any] = {w.name: w for w in settings.webhooks}
        self.links: LinkMinter | None = link_minter(settings)

    @property
    def shared_store(self) -> bool:
        """PostgreSQL: other replicas may share this store."""
        return self.url.split(":", 1)[0].lower() in ("postgresql", "postgres")

    @property
    def delivery_concurrency(self) -> int:
        return int(getattr(self.settings.poller, "delivery_concurrency", 16))

    @property
    def claim_seconds(self) -> float:
        """Delivery claim length sized from this configuration's webhook timeouts."""
        return claim_seconds(float(w.timeout) for w in self.webhooks.values())

    async def __aenter__(self) -> Self:
        await self._stack.__aenter__()
        try:
            self._stack.push_async_callback(self.store.close)
            # The workers start (on another core, from a thread) while the store migrates,
            # the sender is imported and the poller logs in; nothing waits for them but the
            # first body to build (`ParsePool` does). Waiting here put their whole start-up,
            # 100-250 ms, before the first POP3 connect (bench/startup.py).
            pool = self._given_pool
            if pool is None and self.with_sender:
                pool = start_parse_pool(self.settings)
                if pool is not None:
                    self._stack.callback(pool.close)
            self._pool = pool
            await self.store.migrate()
            if self.with_sender and not self.defer_sender:
                await self.open_sender()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)

    async def open_sender(self) -> Any:
        """The pooled sender, opened (with one route per webhook, added to `routes` in place)
        at the first call; entering calls it unless `defer_sender`."""
        if self.sender is not None:
            return self.sender
        from bridge.delivery.sender import WebhookSender

        sender = await self._stack.enter_async_context(
            WebhookSender(limit=self.delivery_concurrency * 2)
        )
        for name, hook in self.webhooks.items():
            self.routes[name] = WebhookRoute(
                target=webhook_target(hook),
                policy=retry_policy(hook),
                prepare=body_builder(hook, self._pool, self.links),
            )
        self.sender = sender
        return sender

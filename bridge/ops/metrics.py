"""Every Prometheus metric of the process, on one dedicated registry.

A dedicated `REGISTRY` (not prometheus-client's global one) means tests and library users can
import the bridge without colliding with their own metrics, and `/metrics` shows exactly what
is documented here. Each metric is created through a helper that also records it in `METRICS`,
the table `metrics_markdown` renders for the docs, so the list cannot drift from the code.

Label values are bounded: accounts and listeners come from the config, outcomes and reasons
are fixed words, and proxy verbs pass through `verb_label` so a client sending random commands
cannot create unbounded series.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

from bridge.records import record

__all__ = [
    "ACCOUNT_LEASES_HELD",
    "BYTES_FETCHED",
    "DEAD_LETTERS",
    "DEAD_LETTERS_STORED",
    "DELIVERIES",
    "DELIVERY_LATENCY",
    "LEASE_RENEWAL_FAILURES",
    "LIVE_REPLICAS",
    "LOGIN_FAILURES",
    "MESSAGES_FETCHED",
    "METRICS",
    "OLDEST_PENDING_AGE",
    "OUTBOX_DEPTH",
    "POLLS",
    "POLL_DURATION",
    "PREFIX",
    "PROXY_BYTES",
    "PROXY_COMMANDS",
    "PROXY_DENIED",
    "PROXY_SESSIONS",
    "PROXY_SESSIONS_ACTIVE",
    "PROXY_TAP",
    "REGISTRY",
    "MetricDoc",
    "Series",
    "best_effort",
    "metrics_markdown",
    "status_class",
    "verb_label",
]

PREFIX = "pop3bridge_"
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(namespace="pop3bridge", registry=REGISTRY)


@record
class MetricDoc:
    name: str  # as exposed (counters get `_total` appended by the client library)
    kind: str
    labels: tuple[str, ...]
    help: str


METRICS: list[MetricDoc] = []


def _counter(name: str, help_text: str, labels: tuple[str, ...] = ()) -> Counter:
    METRICS.append(MetricDoc(PREFIX + name + "_total", "counter", labels, help_text))
    return Counter(PREFIX + name, help_text, labels, registry=REGISTRY)


def _gauge(name: str, help_text: str, labels: tuple[str, ...] = ()) -> Gauge:
    METRICS.append(MetricDoc(PREFIX + name, "gauge", labels, help_text))
    return Gauge(PREFIX + name, help_text, labels, registry=REGISTRY)


def _histogram(
    name: str, help_text: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()
) -> Histogram:
    METRICS.append(MetricDoc(PREFIX + name, "histogram", labels, help_text))
    return Histogram(PREFIX + name, help_text, labels, buckets=buckets, registry=REGISTRY)


# Polls take from milliseconds (nothing new) to minutes (a large first import).
_POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Deliveries: a healthy receiver answers in tens of ms; the top buckets catch the timeouts.
_DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# -- poller ----------------------------------------------------------------------------------
POLLS = _counter(
    "polls", "Polls finished, by account and outcome (ok|error).", ("account", "outcome")
)
POLL_DURATION = _histogram(
    "poll_duration_seconds", "Duration of successful polls.", _POLL_BUCKETS, ("account",)
)
MESSAGES_FETCHED = _counter("messages_fetched", "New messages fetched and recorded.", ("account",))
BYTES_FETCHED = _counter("bytes_fetched", "Message bytes fetched from POP3.", ("account",))
LOGIN_FAILURES = _counter(
    "login_failures",
    "Polls that failed at or before login, by reason (auth|dropped|insecure|tls|connect): "
    "`auth` the server refused the credentials, `dropped` it closed the connection during the "
    "login without an answer.",
    ("account", "reason"),
)

ACCOUNT_NEEDS_REAUTH = _gauge(
    "account_needs_reauth",
    "1 while an OAuth account's refresh token was refused (invalid_grant) and a person must "
    "re-authorise it; the account is not polled meanwhile.",
    ("account",),
)
OAUTH_REFRESH_TOKEN_EXPIRY = _gauge(
    "oauth_refresh_token_expiry_seconds",
    "Seconds until an OAuth account's refresh token expires, where the provider announced it "
    "(refresh_token_expires_in).",
    ("account",),
)

CANARY_AGE = _gauge(
    "canary_age_seconds",
    "How long the oldest freshness canary not yet fetched has been travelling (0 when every "
    "canary sent was fetched); above the account's canary.max_age the mailbox path is stale.",
    ("account",),
)
CANARY_MAX_AGE = _gauge(
    "canary_max_age_seconds",
    "The account's canary.max_age: alert when pop3bridge_canary_age_seconds exceeds it.",
    ("account",),
)
CANARY_ROUND_TRIP = _gauge(
    "canary_round_trip_seconds",
    "Submission-to-fetch time of the last freshness canary fetched.",
    ("account",),
)

# -- leases (several replicas on PostgreSQL) ---------------------------------------------------
ACCOUNT_LEASES_HELD = _gauge(
    "account_leases_held", "Account leases this replica holds and may poll under now."
)
LIVE_REPLICAS = _gauge(
    "live_replicas", "Replicas with an unexpired heartbeat, as of this replica's last one."
)
LEASE_RENEWAL_FAILURES = _counter(
    "lease_renewal_failures",
    "Lease heartbeats that failed; held leases stay usable only until renewal + ttl - margin.",
)

# -- delivery --------------------------------------------------------------------------------
DELIVERIES = _counter(
    "deliveries",
    "Webhook delivery attempts by outcome (delivered|retry|dead) and HTTP status class "
    "(2xx..5xx, or none when no response arrived).",
    ("outcome", "status_class"),
)
DELIVERY_LATENCY = _histogram(
    "delivery_latency_seconds", "Duration of one webhook HTTP attempt.", _DELIVERY_BUCKETS
)
OUTBOX_DEPTH = _gauge("outbox_depth", "Deliveries pending (due now or scheduled for retry).")
OLDEST_PENDING_AGE = _gauge(
    "outbox_oldest_pending_age_seconds", "Age of the oldest pending delivery (0 when none)."
)
DEAD_LETTERS = _counter("dead_letters", "Deliveries moved to the dead-letter list.")
DEAD_LETTERS_STORED = _gauge(
    "dead_letters_stored", "Dead letters in the store now, waiting for `dlq replay`."
)

# -- proxy -----------------------------------------------------------------------------------
PROXY_SESSIONS_ACTIVE = _gauge(
    "proxy_sessions_active", "Client sessions currently open.", ("listener",)
)
PROXY_SESSIONS = _counter("proxy_sessions", "Client sessions accepted.", ("listener",))
PROXY_COMMANDS = _counter(
    "proxy_commands",
    "Client commands relayed or answered, by verb and outcome (ok|err|denied|error).",
    ("verb", "outcome"),
)
PROXY_BYTES = _counter(
    "proxy_bytes", "Bytes relayed, by direction (upstream|downstream).", ("direction",)
)
PROXY_DENIED = _counter("proxy_denied_commands", "Commands refused by policy, by verb.", ("verb",))
PROXY_TAP = _counter(
    "proxy_tap_messages",
    "RETRieved messages the tap handled, by listener and outcome (recorded|oversize|dropped|"
    "failed); dropped and failed copies are logged with user and message number.",
    ("listener", "outcome"),
)
LINK_REQUESTS = _counter(
    "attachment_link_requests",
    "Requests to the attachment link listener, by HTTP status "
    "(200, 206, 304, 403, 404, 405, 410, 416, 503).",
    ("status",),
)
LINK_BYTES_SERVED = _counter(
    "attachment_link_bytes_served", "Content bytes sent by the attachment link listener."
)
LINK_BYTES_HELD = _gauge(
    "attachment_link_bytes_held", "Bytes of attachment content the store keeps for links."
)
LINK_PURGES = _counter(
    "attachment_link_purges", "Link contents (attachments or raw messages) purged after expiry."
)
LINK_BYTES_PURGED = _counter(
    "attachment_link_bytes_purged", "Bytes of link content purged after expiry."
)

_KNOWN_VERBS = frozenset(
    {
        "USER", "PASS", "APOP", "AUTH", "STLS", "CAPA", "STAT", "LIST", "RETR", "DELE",
        "NOOP", "RSET", "QUIT", "TOP", "UIDL", "UTF8", "LANG",
    }
)  # fmt: skip


def verb_label(verb: str | bytes) -> str:
    """A bounded label for a client's command word: known POP3 verbs, else ``OTHER``."""
    text = verb.decode("ascii", "replace") if isinstance(verb, bytes) else verb
    upper = text.upper()
    return upper if upper in _KNOWN_VERBS else "OTHER"


class Series:
    """A labelled metric's children, each looked up once and kept: `labels()` builds a key
    and takes a lock on every call, which per delivery or per proxied command was most of the
    metric update's cost (record_delivery 9.4 -> 4.1 us). Only for label values drawn from a
    bounded set (outcomes, status classes, known verbs), since every child is kept."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Counter) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Counter] = {}

    def __call__(self, *values: str) -> Counter:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


def best_effort(update: Callable[[], object]) -> None:
    """Run one metric update; a failure is logged at debug level and goes no further, because
    observing the bridge must never stop polling, a delivery or a proxy session."""
    try:
        update()
    except Exception:
        logging.getLogger(__name__).debug("metric update failed", exc_info=True)


def status_class(status: int | None) -> str:
    """``2xx``..``5xx`` for an HTTP status, ``none`` when there was no response."""
    if status is None or not 100 <= status <= 599:
        return "none"
    return f"{status // 100}xx"


def metrics_markdown() -> str:
    """The metrics list as a Markdown table (generated into docs/configuration.md)."""
    lines = ["| Metric | Type | Labels | Meaning |", "|---|---|---|---|"]
    for doc in METRICS:
        labels = ", ".join(f"`{label}`" for label in doc.labels) or "-"
        meaning = doc.help.replace("|", "\\|")  # a bare | would end the table cell
        lines.append(f"| `{doc.name}` | {doc.kind} | {labels} | {meaning} |")
    lines.append(
        "| `pop3bridge_process_*` | various | - | CPU, memory and file descriptors of the "
        "process (Linux). |"
    )
    return "\n".join(lines) + "\n"

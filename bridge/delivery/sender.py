"""One pooled HTTP client that POSTs signed webhook bodies and reports what happened.

`WebhookSender.send` never raises for anything the network or the receiver does: every outcome
is a `DeliveryResult` the caller turns into "delivered", "retry later" or "dead letter" (with
`bridge.delivery.policy`). It knows nothing about the store: the long retry schedule belongs
to the caller. Only connection-level failures get a couple of quick in-process retries (a
keep-alive connection the receiver closed while it sat in the pool is the usual cause), each
freshly timestamped and signed, so a receiver never sees a stale timestamp.

Secrets and extra header values (e.g. `Authorization`) never appear in `error`, in `repr` of a
target or in log records: errors are built from our own words plus exception class names and
OS error texts, and then scrubbed of every sensitive value as a second line of defence. URLs in
messages are cut to scheme://host:port, since paths and query strings often carry tokens.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL

from bridge.delivery.client import aiohttp, trust_system_cas
from bridge.delivery.policy import is_permanent_status, parse_retry_after
from bridge.delivery.signing import SigningKeys
from bridge.lifecycle import Service
from bridge.records import record

__all__ = [
    "DeliveryError",
    "DeliveryResult",
    "WebhookSender",
    "WebhookTarget",
    "basic_auth_forms",
]

log = logging.getLogger(__name__)

# Headers the signature scheme owns; configured extras may not override them.
_RESERVED = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature", "content-length"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field-name
_ERROR_BODY_LIMIT = 200  # characters of a failing response body kept in `error`
_READ_LIMIT = 64 * 1024  # bytes of a response we read; the rest is dropped with the connection
RESPONSE_HEAD = 200
USER_AGENT = "pop3bridge-webhooks/0.1"


class DeliveryError(Exception):
    """Misuse of the sender (not a delivery failure): e.g. `send` outside `async with`."""


@record
class DeliveryResult:
    ok: bool  # 2xx
    status: int | None  # HTTP status, None when no response arrived
    retry_after: float | None  # seconds, from Retry-After (any status that carried one)
    permanent: bool  # retrying cannot help (4xx other than 408/409/425/429, bad URL)
    error: str | None  # what went wrong, in words a user can act on; no secrets
    latency: float  # seconds spent in send(), including in-process retries
    # The first RESPONSE_HEAD bytes of the answer's body (decoded, secrets scrubbed), for the
    # custody trail: what the receiver said when it accepted or refused the message.
    response_head: str | None = None


@dataclass(frozen=True)
class WebhookTarget:
    """Where and how to deliver. Validates and pre-keys its secrets at construction.

    `ca_file` trusts that CA bundle instead of the system store; `verify_tls=False` disables
    certificate checks altogether (only for tests and closed networks; say so in the config).
    """

    name: str
    url: str = field(repr=False)  # may carry a token in its path or query
    secrets: Sequence[str] = field(repr=False)
    timeout: float = 10.0
    headers: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    ca_file: str | Path | None = None
    verify_tls: bool = True
    _keys: SigningKeys | None = field(init=False, repr=False, compare=False, hash=False)
    _static_headers: dict[str, str] = field(init=False, repr=False, compare=False, hash=False)
    _sensitive: tuple[str, ...] = field(init=False, repr=False, compare=False, hash=False)
    _url: URL = field(init=False, repr=False, compare=False, hash=False)
    _ssl: ssl.SSLContext | bool = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "secrets", tuple(self.secrets))
        object.__setattr__(self, "headers", dict(self.headers))
        # No secrets: a webhook in a delivery format whose receiver checks Basic auth or its
        # own signature (Mailgun's) instead; webhook-id still goes out for deduplication.
        object.__setattr__(self, "_keys", SigningKeys(self.secrets) if self.secrets else None)
        if not self.timeout > 0:
            raise ValueError(f"webhook {self.name!r}: timeout must be positive")
        try:
            url = URL(self.url)
        except (TypeError, ValueError):
            raise ValueError(f"webhook {self.name!r}: URL is not valid") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"webhook {self.name!r}: URL must be http:// or https:// with a host, "
                f"got {_safe_url(url)}"
            )
        if url.user is not None and any(k.lower() == "authorization" for k in self.headers):
            # aiohttp refuses the request (ValueError) on every attempt: catch it here.
            raise ValueError(
                f"webhook {self.name!r}: the URL carries credentials (user:password@) and "
                "an Authorization header is configured too; keep only one of them"
            )
        object.__setattr__(self, "_url", url)
        object.__setattr__(self, "_ssl", self._ssl_context())
        # identity: the sender reads answers as they come (auto_decompress is off), so a
        # receiver must not compress them, or errors and the custody trail's response head
        # would hold gzip bytes (aiohttp asks for "gzip, deflate" unless told otherwise).
        static = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "accept-encoding": "identity",
        }
        for key, value in self.headers.items():
            if not _TOKEN.fullmatch(key) or any(c in value for c in "\r\n\0"):
                # Caught here, not per request: a CR/LF would let config inject headers.
                raise ValueError(
                    f"webhook {self.name!r}: extra header {key!r} has an invalid name or a "
                    "line break in its value"
                )
            if key.lower() in _RESERVED:
                continue
            static = {k: v for k, v in static.items() if k != key.lower()}
            static[key] = value
        object.__setattr__(self, "_static_headers", static)
        sensitive = [*self.secrets, *(v for v in self.headers.values() if v)]
        # "Bearer <token>": the token alone may be echoed back, so scrub long words too.
        sensitive += [w for v in self.headers.values() for w in v.split() if len(w) >= 8]
        sensitive += [s.split("_", 1)[1] for s in self.secrets if s.startswith("whsec_")]
        if url.password:
            sensitive.append(url.password)
        sensitive += basic_auth_forms(url)
        if url.query_string:
            sensitive.append(url.query_string)
            sensitive += [v for v in url.query.values() if v]
        # Services such as Slack put the token in the path.
        sensitive += [part for part in url.parts if len(part) >= 8]
        # Longest first so a secret containing another is scrubbed whole.
        object.__setattr__(
            self,
            "_sensitive",
            tuple(sorted({s for s in sensitive if len(s) >= 4}, key=len, reverse=True)),
        )

    def _ssl_context(self) -> ssl.SSLContext | bool:
        # Built once per target, so a missing CA file is a configuration error at start-up
        # and not a failure of every delivery.
        if not self.verify_tls:
            return False
        if self.ca_file is None:
            if self._url.scheme == "https":
                trust_system_cas()  # read the system's CAs now, if aiohttp's import did not
            return True  # aiohttp's default verifying context (system trust store)
        try:
            return ssl.create_default_context(cafile=str(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"webhook {self.name!r}: cannot load ca_file {str(self.ca_file)!r} "
                f"({_reason(exc)}); it must be a readable PEM file of CA certificates"
            ) from None

    @property
    def parsed_url(self) -> URL:
        return self._url

    @property
    def ssl_context(self) -> ssl.SSLContext | bool:
        return self._ssl

    @property
    def safe_url(self) -> str:
        """scheme://host:port: enough to tell which receiver failed, nothing secret."""
        return _safe_url(self._url)

    def signed_headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        headers = dict(self._static_headers)
        if body.startswith(b"--"):
            # A Mailgun- or SendGrid-shaped form (bridge.mail.formats): RFC 7578 bodies start
            # with their delimiter, so the boundary is the first line and needs no side channel.
            end = body.find(b"\r\n")
            boundary = body[2:end].decode("ascii", "replace")
            headers["content-type"] = f"multipart/form-data; boundary={boundary}"
        headers["webhook-id"] = msg_id
        headers["webhook-timestamp"] = str(timestamp)
        if self._keys is not None:
            headers["webhook-signature"] = self._keys.sign(msg_id, timestamp, body)
        return headers

    def scrub(self, text: str) -> str:
        for value in self._sensitive:
            text = text.replace(value, "[redacted]")
        return text


class _ConnectionFailure(Exception):
    """Internal: no response arrived for a reason worth one more quick try."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class WebhookSender(Service):
    """`async with WebhookSender(limit=...) as sender: await sender.send(target, id, body)`.

    One `aiohttp.ClientSession` for the sender's lifetime; its connector keeps up to `limit`
    connections (`limit_per_host` per receiver, 0 = no separate cap) and queues further
    requests, so any number of tasks may call `send` at once.
    """

    def __init__(
        self,
        *,
        limit: int = 100,
        limit_per_host: int = 0,
        connect_retries: int = 2,
        connect_retry_wait: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        super().__init__()
        self.limit = limit
        self.limit_per_host = limit_per_host
        self.connect_retries = max(0, connect_retries)
        self.connect_retry_wait = connect_retry_wait
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    # -- lifecycle (bridge.lifecycle.Service: start / ready / stop) ---------------------------
    async def _start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.limit, limit_per_host=self.limit_per_host, enable_cleanup_closed=True
        )
        # trust_env stays off: proxy variables meant for other tools must not reroute
        # signed payloads; cookies are meaningless for webhooks.
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
        )

    async def _stop(self, grace: float | None) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def close(self) -> None:
        """The sender's name for `stop()`."""
        await self.stop()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise DeliveryError("WebhookSender is not open; use 'async with WebhookSender()'")
        return self._session

    async def send(self, target: WebhookTarget, msg_id: str, body: bytes) -> DeliveryResult:
        """POST `body` to `target` with Standard Webhooks headers; never raises for failures."""
        session = self.session
        started = time.monotonic()
        try:
            return await self._post(session, target, msg_id, body, started)
        except _ConnectionFailure as exc:
            failure = exc
        if self.connect_retries:
            # Slow path only: building the retry machinery costs more than a request (and
            # importing tenacity, about 5 ms, more than that: not before a failure).
            import tenacity

            retrying = tenacity.AsyncRetrying(
                retry=tenacity.retry_if_exception_type(_ConnectionFailure),
                stop=tenacity.stop_after_attempt(self.connect_retries),
                wait=tenacity.wait_random_exponential(
                    multiplier=self.connect_retry_wait / 2, max=self.connect_retry_wait
                ),
                reraise=True,
            )
            try:
                await asyncio.sleep(self.connect_retry_wait * random.random())
                async for attempt in retrying:
                    with attempt:
                        log.debug(
                            "retrying webhook %s after a connection failure: %s",
                            target.name,
                            failure.error,
                            extra={"msg_id": msg_id, "webhook": target.name},
                        )
                        return await self._post(session, target, msg_id, body, started)
            except _ConnectionFailure as exc:
                failure = exc
        return self._failed(target, started, failure.error)

    async def _post(
        self,
        session: aiohttp.ClientSession,
        target: WebhookTarget,
        msg_id: str,
        body: bytes,
        started: float,
    ) -> DeliveryResult:
        # The timestamp is the send time of THIS attempt: receivers reject old ones.
        headers = target.signed_headers(msg_id, int(self._clock()), body)
        try:
            async with session.post(
                target.parsed_url,
                data=body,
                headers=headers,
                timeout=self._timeout(target.timeout),
                ssl=target.ssl_context,
                allow_redirects=False,
                compress=False,
            ) as resp:
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), self._clock())
                raw = await resp.content.read(_READ_LIMIT)
                text = "" if 200 <= status < 300 else _snippet(raw)
        except TimeoutError:
            return self._failed(target, started, f"no response within {target.timeout:g}s")
        except aiohttp.ClientConnectorCertificateError as exc:
            return self._failed(
                target,
                started,
                f"TLS certificate of the receiver was not accepted ({_reason(exc)}); "
                "configure ca_file with the CA that signed it",
            )
        except aiohttp.ClientSSLError as exc:
            return self._failed(target, started, f"TLS handshake failed ({_reason(exc)})")
        except aiohttp.ClientConnectorError as exc:
            raise _ConnectionFailure(
                f"cannot connect to {target.safe_url} ({_reason(exc)}); is the receiver running?"
            ) from None
        except aiohttp.ServerDisconnectedError:
            raise _ConnectionFailure(
                f"{target.safe_url} closed the connection before answering"
            ) from None
        except aiohttp.ClientOSError as exc:
            raise _ConnectionFailure(
                f"connection to {target.safe_url} failed while sending ({_reason(exc)})"
            ) from None
        except OSError as exc:  # socket-level failures aiohttp did not wrap
            raise _ConnectionFailure(
                f"connection to {target.safe_url} failed ({_reason(exc)})"
            ) from None
        except aiohttp.InvalidURL:
            return self._failed(target, started, "the webhook URL is not valid", permanent=True)
        except aiohttp.ClientError as exc:
            return self._failed(
                target, started, f"HTTP error talking to {target.safe_url} ({_reason(exc)})"
            )
        except (ValueError, TypeError) as exc:
            # The request could not even be built (aiohttp refuses some header and URL
            # combinations): the same error comes back on every attempt, so it is final.
            return self._failed(
                target,
                started,
                f"the request to {target.safe_url} could not be built "
                f"({type(exc).__name__}: {exc}); fix the webhook's configuration",
                permanent=True,
            )
        latency = time.monotonic() - started
        head = target.scrub(raw[:RESPONSE_HEAD].decode("utf-8", "replace")) if raw else None
        if 200 <= status < 300:
            return DeliveryResult(True, status, retry_after, False, None, latency, head)
        permanent = is_permanent_status(status)
        error = f"{target.safe_url} answered HTTP {status}"
        if 300 <= status < 400:
            error += " (redirects are not followed; point the webhook URL at the final address)"
        if text:
            error += f": {text}"
        return DeliveryResult(
            False, status, retry_after, permanent, target.scrub(error), latency, head
        )

    def _failed(
        self, target: WebhookTarget, started: float, error: str, *, permanent: bool = False
    ) -> DeliveryResult:
        return DeliveryResult(
            ok=False,
            status=None,
            retry_after=None,
            permanent=permanent,
            error=target.scrub(error),
            latency=time.monotonic() - started,
        )

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return timeout


def basic_auth_forms(url: URL | str) -> list[str]:
    """The credentials of a `user:password@` URL as they travel: aiohttp sends them as
    `Authorization: Basic base64(user:password)`, and a receiver may echo that header back.
    """
    try:
        url = URL(url)
    except (TypeError, ValueError):
        return []
    if url.user is None:
        return []
    pair = f"{url.user}:{url.password or ''}"
    forms = {base64.b64encode(pair.encode(enc, "replace")).decode() for enc in ("latin-1", "utf-8")}
    return sorted(forms)


def _safe_url(url: URL) -> str:
    if not url.host:
        return "<invalid URL>"
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}"


def _reason(exc: BaseException) -> str:
    """A short cause without request details: the OS error text or the exception's class."""
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, BaseException):
        exc = os_error
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return exc.verify_message
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return type(exc).__name__


def _snippet(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    text = " ".join(text.split())  # one line: logs are line-oriented
    if len(text) > _ERROR_BODY_LIMIT:
        text = text[:_ERROR_BODY_LIMIT] + "..."
    return text

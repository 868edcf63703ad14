"""Connecting and logging in to one account's server, as every poller command does.

`poll_account` starts each session here, and so do `peek`, `replay` and `reconcile`: one place
decides the client's limits (`max_answer_size`), the TLS context (`tls_context`) and the OAuth
retry.
"""

from __future__ import annotations

import logging
import ssl

from bridge.poller.report import PollReport
from bridge.poller.spec import AccountSpec
from bridge.pop3.client import STAT_UIDL, CapaMemo, POP3Client, login_with_fallback
from bridge.pop3.errors import AuthenticationFailed
from bridge.pop3.tls import shared_client_context

__all__ = ["connect_and_login", "max_answer_size", "tls_context"]

log = logging.getLogger(__name__)


def max_answer_size(max_message_size: int) -> int:
    """The most a single multi-line answer may carry before the server is taken for hostile.

    Only messages whose LIST size is within `max_message_size` are RETR'd, and LIST counts
    the octets sent (RFC 1939 §5), so twice that plus room for line-ending differences is
    generous for an honest server and still bounds memory against a lying one. UIDL/LIST
    answers of even huge mailboxes stay far below it.
    """
    return 2 * max_message_size + 1024 * 1024


def tls_context(spec: AccountSpec) -> ssl.SSLContext | None:
    """The verifying client context for `spec`'s TLS settings (None for `tls: none`), shared
    by every account with the same `ca_file` and `insecure` and by the proxy's upstream legs
    (`bridge.pop3.tls.shared_client_context`: building one per session costs ~22 ms of CPU)."""
    if spec.tls not in ("implicit", "starttls"):
        return None  # no TLS (or a mode the client refuses with its own message)
    return shared_client_context(spec.ca_file, spec.insecure)


async def connect_and_login(
    spec: AccountSpec,
    report: PollReport | None = None,
    capa: CapaMemo | None = None,
    *,
    listing: bool = False,
) -> POP3Client:
    """A logged-in client; an OAuth login refused once is retried once with a fresh token.

    `auth: auto` tries the next mechanism the server offers and the account allows when one is
    refused (over a new connection if the server hung up): `login_with_fallback`.

    With `report`, its `login_delay` is set from CAPA: the value after login when the server
    gives one there (RFC 2449 §6.5: `LOGIN-DELAY n USER` before login means "per user, ask
    again"), else the one before. The CAPA after login goes out with the session's first
    command when the server pipelines (`lazy_capa`), so until then `login_delay` is the one
    before; `poll_account` sets the report's again once STAT and UIDL are answered.

    With `capa` (the account loop's `CapaMemo`) the CAPA before login may be the one its last
    session got instead of a round trip (see `CapaMemo` for when, and why TLS is never
    affected).

    With `listing` the caller's first call must be `stat_uidl`: STAT and UIDL may then go out
    behind the login's last line (`POP3Client.login(ahead=...)`, when the server pipelines).
    """
    before: float | None = None

    async def connect() -> POP3Client:
        nonlocal before
        client = await POP3Client.connect(
            spec.host,
            spec.port,
            tls=spec.tls,
            ssl_context=tls_context(spec),
            ca_file=spec.ca_file,
            insecure=spec.insecure,
            connect_timeout=spec.connect_timeout,
            read_timeout=spec.read_timeout,
            pipelining=spec.pipelining,
            max_body=max_answer_size(spec.max_message_size),
            capa_memo=capa,
            tls_resume=spec.tls_resume,
        )
        before = client.login_delay
        return client

    attempts = 2 if spec.token is not None else 1
    for attempt in range(attempts):
        try:
            client = await login_with_fallback(
                connect,
                spec.username,
                spec.password,
                mechanism=spec.auth,
                allow_plaintext=spec.allow_plaintext,
                token=spec.token,
                # The CAPA after login rides with the session's first command (STAT) when
                # the server pipelines: one round trip fewer per poll.
                lazy_capa=True,
                ahead=STAT_UIDL if listing else (),
            )
        except AuthenticationFailed:
            if attempt + 1 < attempts and spec.invalidate_token is not None:
                # The token may have been revoked or expired early: one refresh, one retry.
                log.info("login refused, refreshing the access token", extra={"account": spec.name})
                spec.invalidate_token()
                continue
            raise
        if report is not None:
            after = client.login_delay
            report.login_delay = after if after is not None else before
        return client
    raise AssertionError("unreachable")  # pragma: no cover

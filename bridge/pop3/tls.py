"""TLS for the POP3 client: the context it verifies servers with, and what a failure says.

Verification is on by default (system store or `ca_file`, host name checked, TLS 1.2 at least);
`insecure` turns it off only when a config asks for it by name. Used for implicit TLS (995) and
STLS alike, by the client and so by both the poller and the proxy's upstream leg.

The contexts built here are `ResumingContext`s: each keeps the sessions its connections were
given, so the next connection to the same server and name can resume instead of repeating the
full handshake (`bridge.pop3.resumption`).
"""

from __future__ import annotations

import os
import ssl
import time

from bridge.pop3.errors import TLSFailure
from bridge.pop3.resumption import ResumingContext

__all__ = ["SHARED_CONTEXT_MAX_AGE", "client_context", "shared_client_context", "ssl_reason"]

# A shared context is rebuilt at least this often, so an updated system CA store is picked up
# without a restart (a `ca_file` is also checked by its mtime and size at every use).
SHARED_CONTEXT_MAX_AGE = 3600.0

# (ca_file, insecure) -> (monotonic time built, the CA file's (mtime_ns, size), context)
_shared: dict[tuple[str | None, bool], tuple[float, tuple[int, int] | None, ssl.SSLContext]] = {}


def client_context(
    ssl_context: ssl.SSLContext | None, ca_file: str | None, insecure: bool
) -> ssl.SSLContext:
    """`ssl_context` as given, or a verifying client context (see the module docstring).

    Built as `ssl.create_default_context(cafile=ca_file)` builds one (PROTOCOL_TLS_CLIENT,
    which requires a certificate and checks the host name; `ca_file` or the system store),
    as a `ResumingContext`. Unlike it, `SSLKEYLOGFILE` is not honoured: a service does not
    write its TLS secrets to a file because of an environment variable.
    """
    if ssl_context is not None:
        return ssl_context
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if ca_file:
            ctx.load_verify_locations(cafile=ca_file)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except (OSError, ssl.SSLError) as exc:
        raise TLSFailure(f"cannot load CA file {ca_file}: {exc}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def shared_client_context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    """The verifying client context for (`ca_file`, `insecure`), shared by every connection
    with those settings: the poller's accounts and the proxy's upstream legs alike.

    Building one loads the CA certificates: about 22 ms of CPU with the system store on this
    project's benchmark machine, which at 10,000 accounts polled every 60 s would be 3.6 cores
    spent re-reading the same file (and 22 ms more per proxied session). A context holds only
    settings and trust anchors (each connection gets its own TLS state from it), so sharing it
    changes nothing a server sees. It is rebuilt when the CA file changes on disk and at least
    every `SHARED_CONTEXT_MAX_AGE` seconds.
    """
    key = (ca_file, insecure)
    stamp: tuple[int, int] | None = None
    if ca_file is not None:
        try:
            st = os.stat(ca_file)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None  # client_context says what is wrong with it
    now = time.monotonic()
    hit = _shared.get(key)
    if hit is not None and hit[1] == stamp and now - hit[0] < SHARED_CONTEXT_MAX_AGE:
        return hit[2]
    ctx = client_context(None, ca_file, insecure)
    _shared[key] = (now, stamp, ctx)
    return ctx


def ssl_reason(exc: ssl.SSLError) -> str:
    """Why a handshake failed, in words an operator can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed ({exc.verify_message})"
    return str(exc.reason or exc)

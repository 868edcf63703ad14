"""TLS for the POP3 client: the context it verifies servers with, and what a failure says.

Verification is on by default (system store or `ca_file`, host name checked, TLS 1.2 at least);
`insecure` turns it off only when a config asks for it by name. Used for implicit TLS (995) and
STLS alike, by the client and so by both the poller and the proxy's upstream leg.
"""

from __future__ import annotations

import ssl

from bridge.pop3.errors import TLSFailure

__all__ = ["client_context", "ssl_reason"]


def client_context(
    ssl_context: ssl.SSLContext | None, ca_file: str | None, insecure: bool
) -> ssl.SSLContext:
    """`ssl_context` as given, or a verifying client context (see the module docstring)."""
    if ssl_context is not None:
        return ssl_context
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSFailure(f"cannot load CA file {ca_file}: {exc}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def ssl_reason(exc: ssl.SSLError) -> str:
    """Why a handshake failed, in words an operator can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed ({exc.verify_message})"
    return str(exc.reason or exc)

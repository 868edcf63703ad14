"""aiohttp for the bridge's HTTP clients, imported without reading the system CA bundle, and
`trust_system_cas`, which reads it before the first request that verifies against it.

Why. Importing aiohttp builds its two default TLS contexts (`aiohttp.connector`: one that
verifies, one that does not), and each loads the system's trust store then: on Debian, and in
the python:3.11-slim image the Dockerfile builds on, OpenSSL's default CA file
(/usr/lib/ssl/cert.pem -> /etc/ssl/certs/ca-certificates.crt, or `SSL_CERT_FILE`) is parsed
whole, twice, 45-65 ms of `pop3bridge once`'s start-up (`python -X importtime`:
aiohttp.connector's own time; BENCHMARKS.md section 6). A webhook on http://, the context that
verifies nothing (`verify_tls: false`) and a webhook with its own `ca_file` never use those
certificates.

How. While this module imports aiohttp, `ssl.SSLContext.set_default_verify_paths` (the step of
`create_default_context` that reads the trust store) only records its context, on the
importing thread; every other thread gets the real call. `trust_system_cas()` then makes the
real call on each recorded context that verifies certificates, once: the same step, on the
same object, reading the same environment, only later. Until then that context holds no CA at
all, so a request through it would fail verification (closed), never pass unverified. The
sender calls it for every https webhook that verifies with the system's CAs (when its target
is built, before any request) and the OAuth token refresh before each request; with aiohttp
already imported elsewhere (the ops server's `aiohttp.web`), nothing is deferred and it does
nothing.
"""

from __future__ import annotations

import contextlib
import ssl
import sys
import threading
from collections.abc import Iterator

__all__ = ["aiohttp", "trust_system_cas"]

_deferred: list[ssl.SSLContext] = []
_lock = threading.Lock()


@contextlib.contextmanager
def _trust_store_deferred() -> Iterator[None]:
    cls = ssl.SSLContext
    real = cls.set_default_verify_paths
    if "aiohttp.connector" in sys.modules or "set_default_verify_paths" in cls.__dict__:
        yield  # aiohttp is imported already, or someone else patches this: leave it be
        return
    importer = threading.get_ident()

    def record(self: ssl.SSLContext) -> None:
        if threading.get_ident() != importer:
            real(self)
            return
        with _lock:
            _deferred.append(self)

    cls.set_default_verify_paths = record  # type: ignore[method-assign]
    try:
        yield
    finally:
        del cls.set_default_verify_paths  # back to the inherited C method


def trust_system_cas() -> None:
    """Load the system's trust store into every verifying context aiohttp made at its import
    (the module docstring); a context with `CERT_NONE` checks no certificate and stays empty."""
    if not _deferred:
        return
    with _lock:
        pending = [c for c in _deferred if c.verify_mode != ssl.CERT_NONE]
        _deferred.clear()
        for context in pending:
            context.set_default_verify_paths()


with _trust_store_deferred():
    import aiohttp

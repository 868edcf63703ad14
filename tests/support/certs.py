"""Throw-away TLS material for tests: a test CA, a server certificate it signed, and a second CA.

The server certificate covers every name a loopback test may dial (``localhost``, ``127.0.0.1``,
``::1``) so tests fail only when they mean to: the "wrong CA" tests use `other_ca_file`, which
signed nothing the servers present. Files are PEM so non-Python programs (Dovecot, curl,
fetchmail) can read the same material.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["SERVER_NAMES", "TestCerts", "make_test_certs"]

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TestCerts:
    """Paths of the generated PEM files plus helpers that build `ssl.SSLContext`s from them."""

    __test__ = False  # not a pytest test class, despite the name

    directory: Path
    ca_file: Path  # the test CA certificate: trust this to accept `cert_file`
    cert_file: Path  # server certificate chain (leaf first)
    key_file: Path  # server private key (unencrypted)
    other_ca_file: Path  # an unrelated CA: trusting only this must make verification fail

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context (hostname checks on) that trusts only the test CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def wrong_client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only the unrelated CA."""
        return ssl.create_default_context(cafile=str(self.other_ca_file))

    def server_context(self) -> ssl.SSLContext:
        """A server context presenting the test certificate (for fake servers in tests)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx


def make_test_certs(directory: Path) -> TestCerts:
    """Create a CA, a server certificate for `SERVER_NAMES` and an unrelated CA in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="pop3bridge test CA")
    other = trustme.CA(organization_name="pop3bridge unrelated CA")
    leaf = ca.issue_cert(*SERVER_NAMES)
    certs = TestCerts(
        directory=directory,
        ca_file=directory / "ca.pem",
        cert_file=directory / "server-chain.pem",
        key_file=directory / "server-key.pem",
        other_ca_file=directory / "other-ca.pem",
    )
    ca.cert_pem.write_to_path(str(certs.ca_file))
    other.cert_pem.write_to_path(str(certs.other_ca_file))
    # Leaf first, then the CA: what servers should send.
    certs.cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(certs.key_file))
    # Dovecot's unprivileged login processes never open these (the config process does), but
    # other servers in tests might run as another user; the key is test-only material.
    for path in (certs.ca_file, certs.other_ca_file, certs.cert_file):
        path.chmod(0o644)
    certs.key_file.chmod(0o600)
    return certs

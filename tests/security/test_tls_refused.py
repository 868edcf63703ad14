"""TLS is verified by default, end to end through `pop3bridge once`: an unknown CA, a wrong
host name and an expired certificate are each refused before a single command (let alone a
credential) reaches the server; `insecure: true` is the only way past, which also shows that
the refusals come from verification and not from a broken setup. And a man in the middle who
strips STLS from CAPA meets a bridge that refuses rather than logging in in plaintext."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from bridge.testing.fakepop3 import FakePOP3Server, Faults
from tests.security.cli import bridge, write_config
from tests.support.loop import LoopThread

CREDENTIAL_VERBS = {"USER", "PASS", "APOP", "AUTH"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    names = ("127.0.0.1", "localhost")
    return {
        "ca_file": str(d / "ca.pem"),
        "good": ca.issue_cert(*names),
        "unknown CA": other.issue_cert(*names),
        "wrong host": ca.issue_cert("mail.elsewhere.example"),
        "expired": ca.issue_cert(
            *names,
            not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
            not_after=dt.datetime(2020, 6, 1, tzinfo=dt.UTC),
        ),
    }


def server_context(leaf: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    return ctx


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    with LoopThread() as lt:
        yield lt


def run_once(
    loop: LoopThread, tmp_path: Path, server: FakePOP3Server, **account: Any
) -> tuple[int, str]:
    loop.call(server.start())
    try:
        cfg = write_config(
            tmp_path / "c.yaml",
            [
                {
                    "name": "acct",
                    "host": "127.0.0.1",
                    "port": server.port,
                    "username": server.user,
                    "password": server.password,
                    "webhook": "main",
                    **account,
                }
            ],
            state=f"sqlite:///{tmp_path / 's.db'}",
        )
        return bridge("once", "--config", str(cfg))
    finally:
        loop.call(server.stop())


@pytest.mark.parametrize("case", ["unknown CA", "wrong host", "expired"])
def test_bad_certificate_is_refused_before_any_command(
    pki: dict[str, Any], loop: LoopThread, tmp_path: Path, case: str
) -> None:
    server = FakePOP3Server([], ssl_context=server_context(pki[case]), implicit_tls=True)
    code, out = run_once(loop, tmp_path, server, tls="implicit", ca_file=pki["ca_file"])
    assert code != 0, out
    assert server.commands_seen == []
    assert "certificate" in out.lower(), out
    hint = {
        "unknown CA": "unable to get local issuer",
        "wrong host": "mismatch",
        "expired": "expired",
    }
    assert hint[case] in out.lower(), out


def test_insecure_switch_is_the_only_way_past_a_bad_certificate(
    pki: dict[str, Any], loop: LoopThread, tmp_path: Path
) -> None:
    server = FakePOP3Server([], ssl_context=server_context(pki["expired"]), implicit_tls=True)
    code, out = run_once(loop, tmp_path, server, tls="implicit", insecure=True)
    assert code == 0, out
    assert ("PASS", ("password",)) in server.commands_seen or any(
        verb in CREDENTIAL_VERBS for verb, _ in server.commands_seen
    )


def test_good_certificate_with_the_ca_file_logs_in(
    pki: dict[str, Any], loop: LoopThread, tmp_path: Path
) -> None:
    server = FakePOP3Server([], ssl_context=server_context(pki["good"]), implicit_tls=True)
    code, out = run_once(loop, tmp_path, server, tls="implicit", ca_file=pki["ca_file"])
    assert code == 0, out
    assert server.connections and server.connections[0].authenticated_as == server.user


def test_stls_stripped_by_a_man_in_the_middle_is_refused(
    pki: dict[str, Any], loop: LoopThread, tmp_path: Path
) -> None:
    server = FakePOP3Server(
        [], ssl_context=server_context(pki["good"]), faults=Faults(strip_stls=True)
    )
    code, out = run_once(loop, tmp_path, server, tls="starttls", ca_file=pki["ca_file"])
    assert code != 0, out
    verbs = {verb for verb, _ in server.commands_seen}
    assert not verbs & CREDENTIAL_VERBS, server.commands_seen  # nothing sent in plaintext
    assert "STLS" in out, out
    assert server.password not in out


def test_stls_when_offered_upgrades_before_login(
    pki: dict[str, Any], loop: LoopThread, tmp_path: Path
) -> None:
    """The control for the stripping test: same server without the fault logs in over TLS."""
    server = FakePOP3Server([], ssl_context=server_context(pki["good"]))
    code, out = run_once(loop, tmp_path, server, tls="starttls", ca_file=pki["ca_file"])
    assert code == 0, out
    (conn,) = server.connections
    assert conn.tls and conn.authenticated_as == server.user
    verbs = [verb for verb, _ in conn.commands]
    assert verbs.index("STLS") < min(verbs.index(v) for v in verbs if v in CREDENTIAL_VERBS)


@pytest.mark.parametrize("auth", ["user", "plain"])
def test_plaintext_login_needs_the_explicit_switch(
    loop: LoopThread, tmp_path: Path, auth: str
) -> None:
    """Mechanisms that put the password on the wire are refused on a link without TLS.
    (`auto` may still pick APOP or CRAM-MD5 there: they never send the password itself;
    docs/security.md says what that leaves open.)"""
    server = FakePOP3Server([])
    code, out = run_once(loop, tmp_path, server, tls="none", auth=auth)
    assert code != 0, out
    assert "InsecureAuthRefused" in out, out
    assert not {verb for verb, _ in server.commands_seen} & CREDENTIAL_VERBS
    server = FakePOP3Server([])
    code, out = run_once(loop, tmp_path, server, tls="none", auth=auth, allow_plaintext=True)
    assert code == 0, out
    assert server.connections[0].authenticated_as == server.user

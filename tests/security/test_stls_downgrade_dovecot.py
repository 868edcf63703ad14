"""STLS stripping by a man in the middle, in front of the real Dovecot: a `FaultRelay` removes
STLS from CAPA and refuses the command. With `tls: starttls` the bridge must give up without
sending a credential; the same relay without the fault sees the session go encrypted right
after STLS, so no credential ever crosses it in the clear."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.cli import bridge, write_config
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.faultrelay import FaultRelay, RelayFault
from tests.support.loop import LoopThread

pytestmark = pytest.mark.dovecot

CREDENTIAL_VERBS = {"USER", "PASS", "APOP", "AUTH"}


@pytest.fixture
def relay(dovecot: DovecotServer) -> Iterator[FaultRelay]:
    with LoopThread() as loop:
        r = FaultRelay(dovecot.host, dovecot.pop3_port)
        loop.call(r.start())
        try:
            yield r
        finally:
            loop.call(r.stop())


def once_through(
    relay: FaultRelay, dovecot: DovecotServer, user: DovecotUser, tmp_path: Path
) -> tuple[int, str]:
    account = {
        "name": "mitm",
        "host": "127.0.0.1",
        "port": relay.port,
        "tls": "starttls",
        "ca_file": str(dovecot.ca_file),
        "username": user.name,
        "password": user.password,
        "webhook": "main",
    }
    cfg = write_config(tmp_path / "c.yaml", [account], state=f"sqlite:///{tmp_path / 's.db'}")
    return bridge("once", "--config", str(cfg))


def test_stripped_stls_is_refused_and_no_credential_is_sent(
    relay: FaultRelay, dovecot: DovecotServer, dovecot_user: DovecotUser, tmp_path: Path
) -> None:
    relay.queue(RelayFault("strip_stls"))
    code, out = once_through(relay, dovecot, dovecot_user, tmp_path)
    assert code != 0, out
    assert relay.applied["strip_stls"] >= 1
    (verbs,) = relay.sessions
    assert "CAPA" in verbs and not set(verbs) & CREDENTIAL_VERBS, verbs
    assert "STLS" in out and dovecot_user.password not in out


def test_without_the_attack_the_session_is_encrypted_after_stls(
    relay: FaultRelay, dovecot: DovecotServer, dovecot_user: DovecotUser, tmp_path: Path
) -> None:
    code, out = once_through(relay, dovecot, dovecot_user, tmp_path)
    assert code == 0, out
    (verbs,) = relay.sessions
    assert "STLS" in verbs, verbs
    # Everything after STLS is TLS records: the relay cannot read a single command.
    assert not set(verbs[verbs.index("STLS") :]) & CREDENTIAL_VERBS, verbs

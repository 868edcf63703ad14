"""`login.tls_context`: one verifying context per TLS setting, rebuilt when the CA file changes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bridge.config.account import AccountConfig
from bridge.poller.build import account_spec
from bridge.poller.login import tls_context
from bridge.poller.poll import poll_account
from bridge.poller.spec import AccountSpec
from bridge.pop3.errors import TLSFailure
from bridge.store.base import Store
from tests.poller.conftest import dovecot_spec
from tests.support.certs import TestCerts
from tests.support.dovecot import DovecotServer, DovecotUser


def _spec(**kw: object) -> AccountSpec:
    return AccountSpec(name="a", host="127.0.0.1", username="u", webhook="w", **kw)  # type: ignore[arg-type]


def test_accounts_with_the_same_tls_settings_share_one_context(tmp_path: Path) -> None:
    assert tls_context(_spec(tls="none")) is None
    system = tls_context(_spec(tls="implicit"))
    assert system is not None and system is tls_context(_spec(tls="starttls"))
    insecure = tls_context(_spec(tls="implicit", insecure=True))
    assert insecure is not system and insecure is not None
    assert not insecure.check_hostname and system.check_hostname


def test_a_changed_ca_file_gives_a_new_context(tmp_path: Path, tls_certs: TestCerts) -> None:
    ca = tmp_path / "ca.pem"
    shutil.copy(tls_certs.ca_file, ca)
    first = tls_context(_spec(ca_file=str(ca)))
    assert first is tls_context(_spec(ca_file=str(ca)))
    shutil.copy(tls_certs.other_ca_file, ca)
    stat = ca.stat()
    os.utime(ca, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = tls_context(_spec(ca_file=str(ca)))
    assert second is not first
    # The new context trusts what the file says now, and only that.
    names = {dict(x[0] for x in c["subject"])["organizationName"] for c in second.get_ca_certs()}
    assert names == {"pop3bridge unrelated CA"}


def test_a_missing_ca_file_is_the_same_typed_error(tmp_path: Path) -> None:
    with pytest.raises(TLSFailure, match="cannot load CA file"):
        tls_context(_spec(ca_file=str(tmp_path / "missing.pem")))


async def test_polls_over_pop3s_reuse_the_context_and_verify(
    dovecot: DovecotServer, dovecot_user: DovecotUser, store: Store
) -> None:
    spec = dovecot_spec(dovecot, dovecot_user)
    shared = tls_context(spec)
    for _ in range(2):
        report = await poll_account(spec, store)
        assert report.on_server == 0
    assert tls_context(spec) is shared
    wrong = dovecot_spec(dovecot, dovecot_user, ca_file=str(dovecot.certs.other_ca_file))
    with pytest.raises(TLSFailure, match="certificate verification failed"):
        await poll_account(wrong, store)


@pytest.mark.parametrize(("given", "expected"), [({}, True), ({"tls_resume": False}, False)])
def test_tls_resume_reaches_the_spec(given: dict[str, object], expected: bool) -> None:
    account = AccountConfig.model_validate(
        {
            "name": "a",
            "host": "mail.example",
            "username": "u",
            "password": "p",
            "webhook": "w",
            **given,
        }
    )
    assert account_spec(account, None, {}).tls_resume is expected

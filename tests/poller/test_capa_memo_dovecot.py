"""The account loop's `CapaMemo` against a real Dovecot: polls after the first skip the CAPA
before login, and a poll that fails in any way makes the next one ask again."""

from __future__ import annotations

import pytest

from bridge.poller.poll import SeenMemo, poll_account
from bridge.pop3.client import CapaMemo
from bridge.pop3.errors import AuthenticationFailed
from bridge.store import Store
from bridge.testing.samples import generate_messages
from tests.poller.conftest import dovecot_spec
from tests.support.dovecot import DovecotServer, DovecotUser

pytestmark = pytest.mark.dovecot


@pytest.mark.parametrize("tls", ["implicit", "none"])
async def test_polls_with_the_memo_and_without_it_see_the_same(
    dovecot: DovecotServer, dovecot_user: DovecotUser, store: Store, tls: str
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=71))
    plain = {"tls": "none", "port": dovecot.pop3_port, "allow_plaintext": True}
    spec = dovecot_spec(dovecot, dovecot_user, **(plain if tls == "none" else {}))
    seen, capa = SeenMemo(), CapaMemo()
    assert (await poll_account(spec, store, memo=seen, capa=capa)).recorded == 2
    assert capa.caps is not None and "CRAM-MD5" in capa.caps["SASL"]
    assert capa.encrypted == (tls == "implicit")
    dovecot.deliver_many(dovecot_user, generate_messages(1, seed=72))
    report = await poll_account(spec, store, memo=seen, capa=capa)  # no CAPA before login
    assert (report.new, report.recorded) == (1, 1)
    assert (await poll_account(spec, store, memo=seen, capa=capa)).new == 0
    assert capa.caps is not None


async def test_a_failed_poll_drops_the_memo(
    dovecot: DovecotServer, dovecot_user: DovecotUser, store: Store
) -> None:
    spec = dovecot_spec(dovecot, dovecot_user)
    capa = CapaMemo()
    await poll_account(spec, store, capa=capa)
    assert capa.caps is not None
    wrong = dovecot_spec(dovecot, dovecot_user, password="not-the-password")
    with pytest.raises(AuthenticationFailed):
        await poll_account(wrong, store, capa=capa)
    assert capa.caps is None
    await poll_account(spec, store, capa=capa)  # asks, and remembers again
    assert capa.caps is not None

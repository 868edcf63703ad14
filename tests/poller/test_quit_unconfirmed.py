"""An idle poll sends QUIT and closes without waiting for its reply (`POP3Client.quit(confirm=
False)`); a poll that RETR'd or DELE'd waits for the +OK, which alone lets deletions count."""

from __future__ import annotations

import time

import pytest

from bridge.delivery.worker import Deliveries
from bridge.poller.poll import SeenMemo, poll_account
from bridge.pop3.client import POP3Client
from bridge.pop3.errors import ResponseError
from bridge.store import Store
from bridge.testing.fakepop3 import FakePOP3Server, FakeSession, Faults
from bridge.testing.samples import generate_messages
from tests.poller.conftest import dovecot_spec
from tests.support.accounts import fake_account
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.wait import wait_until


async def test_unconfirmed_quit_reaches_the_server_and_closes() -> None:
    async with FakePOP3Server(generate_messages(2, seed=5), user="u", password="pw") as server:
        client = await POP3Client.connect(server.host, server.port, tls="none")
        async with client:
            await client.login("u", "pw", allow_plaintext=True, lazy_capa=True)
            (count, _), listing = await client.stat_uidl()
            assert count == 2 and len(listing) == 2
            await client.quit(confirm=False)
            assert client.closed
        await wait_until(lambda: server.connections[0].closed, what="the session to end")
        info = server.connections[0]
        assert info.quit and not info.error
        assert [verb for verb, _ in info.commands][-1] == "QUIT"


async def test_an_idle_poll_does_not_wait_for_quit_but_a_deleting_one_does(
    store: Store,
) -> None:
    async def refuse_quit(session: FakeSession, args: tuple[str, ...]) -> None:
        await session.send(b"-ERR some deleted messages not removed\r\n")
        session.hang_up()

    box = generate_messages(2, seed=6)
    async with FakePOP3Server(box, user="u", password="pw") as server:
        spec = fake_account(server, on_delivered="delete")
        memo = SeenMemo()
        report = await poll_account(spec, store, deliveries=Deliveries(), delete_wait=0, memo=memo)
        assert report.recorded == 2
        # Idle now: QUIT's -ERR is never read, and there was nothing it could undo.
        server.queue_faults(Faults(answer={"QUIT": refuse_quit}))
        report = await poll_account(spec, store, memo=memo)
        assert report.new == 0 and report.deleted == 0
        # Delivered: the next poll DELEs both, and QUIT's -ERR must fail it, nothing marked.
        for item in await store.claim_due(time.time() + 1, 10, "test", 60):
            await store.mark_delivered(item.id, 200, time.time())
        server.queue_faults(Faults(answer={"QUIT": refuse_quit}))
        with pytest.raises(ResponseError, match="QUIT"):
            await poll_account(spec, store, memo=memo)
        assert len(await store.deletable_uidls(spec.name)) == 2
        assert len(server.mailbox) == 2


@pytest.mark.dovecot
async def test_an_idle_poll_logs_out_of_dovecot(
    dovecot: DovecotServer, dovecot_user: DovecotUser, store: Store
) -> None:
    dovecot.deliver_many(dovecot_user, generate_messages(1, seed=7))
    spec = dovecot_spec(dovecot, dovecot_user)
    memo = SeenMemo()
    assert (await poll_account(spec, store, memo=memo)).recorded == 1
    report = await poll_account(spec, store, memo=memo)  # idle: QUIT not waited for
    assert report.new == 0

    def logged_out() -> bool:
        # Dovecot read QUIT and ended in UPDATE ("Logged out"), not a dropped connection.
        lines = [ln for ln in dovecot.log_text().splitlines() if dovecot_user.name in ln]
        return sum("Disconnected: Logged out" in ln for ln in lines) >= 2

    await wait_until(logged_out, what="Dovecot to log both sessions out")

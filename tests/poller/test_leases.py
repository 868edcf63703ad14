"""Account leases in the scheduler: heartbeat rounds against a real store (SQLite and
PostgreSQL), the monotonic deadline that stops a replica before its lease could expire for
others, and a session that loses its lease never commits DELE (real Dovecot)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.poller.poll import LeaseLost, poll_account
from bridge.poller.scheduler import LeaseOptions, Scheduler
from bridge.poller.sharing import assign
from bridge.poller.spec import AccountSpec
from bridge.store import Store, open_store
from bridge.store.errors import StoreUnavailable
from bridge.testing.samples import generate_messages
from tests.poller.conftest import dovecot_spec
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.pgschema import BACKENDS, drop_schema, schema_url

TTL = 30.0


@pytest.fixture(params=BACKENDS)
async def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    url = schema_url(request.getfixturevalue("postgres_dsn"), "t_lease")
    yield url
    await drop_schema(url)


class Clocks:
    """Wall and monotonic time the test moves by hand."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def spec(name: str) -> AccountSpec:
    return AccountSpec(name=name, host="127.0.0.1", port=1, username="u", webhook="main")


def replica(store: Store, name: str, accounts: list[str], clocks: Clocks) -> Scheduler:
    specs = [spec(a) for a in accounts]

    async def source() -> list[AccountSpec]:
        return specs

    sched = Scheduler(
        store,
        source,
        leases=LeaseOptions(name, ttl=TTL),
        clock=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
    )
    # What `run` learns from its first account-list refresh, without starting poll loops.
    sched._names = accounts
    return sched


@pytest.fixture
async def stores(shared_url: str) -> AsyncIterator[Callable[[], Store]]:
    opened: list[Store] = []

    def make() -> Store:
        s = open_store(shared_url)
        opened.append(s)
        return s

    first = make()
    await first.migrate()
    yield make
    for s in opened:
        await s.close()


async def rounds(reps: list[Scheduler], clocks: Clocks, n: int) -> None:
    for _ in range(n):
        for r in reps:
            await r.lease_round()
        clocks.advance(TTL / 3)


async def test_three_replicas_split_accounts_by_rendezvous(
    stores: Callable[[], Store],
) -> None:
    clocks = Clocks()
    accounts = [f"acct{i:02d}" for i in range(30)]
    reps = [replica(stores(), f"r{i}", accounts, clocks) for i in range(3)]
    await rounds(reps, clocks, 1)
    # First round only announces: nobody grabbed anything before seeing the others.
    assert all(r.held == set() for r in reps)
    await rounds(reps, clocks, 3)
    owner = assign(accounts, ["r0", "r1", "r2"])
    for r in reps:
        assert r.held == {a for a, o in owner.items() if o == r.leases.holder}  # type: ignore[union-attr]
    holders = await reps[0].store.lease_holders(clocks.wall)
    assert holders == owner


async def test_a_dead_replicas_accounts_move_within_one_ttl(
    stores: Callable[[], Store],
) -> None:
    clocks = Clocks()
    accounts = [f"acct{i:02d}" for i in range(30)]
    reps = [replica(stores(), f"r{i}", accounts, clocks) for i in range(3)]
    await rounds(reps, clocks, 4)
    dead = reps.pop()
    orphans = dead.held
    assert orphans
    died_at = clocks.wall
    # The survivors keep beating; the dead one's leases run out after TTL.
    taken_at = None
    while taken_at is None:
        await rounds(reps, clocks, 1)
        if orphans <= reps[0].held | reps[1].held:
            taken_at = clocks.wall
        assert clocks.wall - died_at < 2 * TTL, "orphaned accounts were never taken over"
    assert taken_at - died_at <= TTL + 2 * TTL / 3
    assert reps[0].held | reps[1].held == set(accounts)
    assert not reps[0].held & reps[1].held


async def test_renewal_failure_stops_using_leases_before_they_expire(
    stores: Callable[[], Store],
) -> None:
    clocks = Clocks()
    accounts = ["a", "b", "c"]
    sched = replica(stores(), "r0", accounts, clocks)
    await rounds([sched], clocks, 2)
    assert sched.held == set(accounts)
    renewed_at = clocks.mono - TTL / 3  # the last successful round

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("PostgreSQL at test is unavailable (test)")

    sched.store.heartbeat = down  # type: ignore[method-assign]
    # Renewals fail; the leases stay usable only until renewal + ttl - margin.
    while sched.held:
        await sched.lease_round()
        clocks.advance(1.0)
    stopped = clocks.mono - 1.0
    assert stopped <= renewed_at + TTL - sched.leases.safety  # type: ignore[union-attr]
    # ...which is before the row expires for everyone else (renewal + ttl).
    other = replica(stores(), "r1", accounts, clocks)
    assert await other.store.lease_holders(clocks.wall) == dict.fromkeys(accounts, "r0")
    assert not sched.owns("a")


async def test_clean_shutdown_releases_at_once(stores: Callable[[], Store]) -> None:
    clocks = Clocks()
    store = stores()
    first = replica(store, "r0", ["a", "b"], clocks)
    await rounds([first], clocks, 2)
    assert await store.lease_holders(clocks.wall) == {"a": "r0", "b": "r0"}
    stop = asyncio.Event()
    stop.set()
    await first.run(stop, grace=0.1)
    assert await store.lease_holders(clocks.wall) == {}
    assert await store.live_replicas(clocks.wall) == []  # membership ended, not left to expire


# -- the session side: a lost lease never commits ----------------------------------------------
pytest_dovecot = pytest.mark.dovecot


@pytest_dovecot
async def test_a_session_that_loses_its_lease_deletes_nothing(
    dovecot: DovecotServer, dovecot_user: DovecotUser, tmp_path: Path
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    await store.migrate()
    try:
        dovecot.deliver_many(dovecot_user, generate_messages(3, seed=61))
        account = dovecot_spec(dovecot, dovecot_user, on_delivered="delete")
        await poll_account(account, store, delete_wait=0)
        for item in await store.claim_due(time.time() + 1, 100, "w", 60):
            await store.mark_delivered(item.id, 204, time.time())
        assert len(await store.deletable_uidls(account.name)) == 3

        # The lease is good when the session starts and runs out after DELE was sent.
        checks = iter([True, True])

        def owned() -> bool:
            return next(checks, False)

        with pytest.raises(LeaseLost, match="without QUIT"):
            await poll_account(account, store, delete_wait=0, owned=owned)
        # No QUIT: Dovecot undid the DELEs, and the store still wants them deleted.
        assert dovecot.message_count(dovecot_user) == 3
        assert len(await store.deletable_uidls(account.name)) == 3

        # With the lease held throughout, the same poll deletes them.
        report = await poll_account(account, store, delete_wait=0, owned=lambda: True)
        assert report.deleted == 3
        assert dovecot.message_count(dovecot_user) == 0
    finally:
        await store.close()


async def test_no_session_starts_without_the_lease(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    await store.migrate()
    try:
        # Port 1 would refuse the connection; LeaseLost comes first, nothing is dialled.
        with pytest.raises(LeaseLost):
            await poll_account(spec("x"), store, owned=lambda: False)
    finally:
        await store.close()


async def test_a_lease_lost_while_waiting_for_a_session_slot_starts_no_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop saw the lease held, then waited for a slot while a heartbeat handed the
    account on: no session is logged (the replicas test reads those lines as mailbox
    sessions) and nothing is dialled."""
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    await store.migrate()
    clocks = Clocks()
    try:
        sched = replica(store, "r1", ["x"], clocks)
        sched._held = {"x": clocks.mono - 1}  # expired by the time the slot was free
        with caplog.at_level("DEBUG", logger="bridge.poller.scheduler"), pytest.raises(LeaseLost):
            await sched._poll(spec("x"))
        assert not [r for r in caplog.records if r.getMessage() == "session start"]
        assert sched._busy == set()
    finally:
        await store.close()


async def test_a_removed_account_is_released_and_an_added_one_taken(
    stores: Callable[[], Store],
) -> None:
    clocks = Clocks()
    store = stores()
    sched = replica(store, "r0", ["a", "b", "c"], clocks)
    await rounds([sched], clocks, 2)
    assert await store.lease_holders(clocks.wall) == dict.fromkeys("abc", "r0")
    # The account list refresh dropped "b" and brought "d" (e.g. `accounts remove`/`add`).
    sched._names = ["a", "c", "d"]
    await rounds([sched], clocks, 1)
    assert await store.lease_holders(clocks.wall) == dict.fromkeys("acd", "r0")
    assert sched.held == {"a", "c", "d"}


async def test_lease_heartbeats_feed_the_metrics(stores: Callable[[], Store]) -> None:
    from bridge.ops import metrics
    from bridge.poller.observe import Observer

    clocks = Clocks()
    store = stores()
    sched = replica(store, "r0", ["a", "b", "c"], clocks)
    sched.on_leases = Observer(store).on_leases
    value = metrics.REGISTRY.get_sample_value
    failures = value("pop3bridge_lease_renewal_failures_total") or 0.0
    await rounds([sched], clocks, 2)
    assert value("pop3bridge_account_leases_held") == 3
    assert value("pop3bridge_live_replicas") == 1

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("PostgreSQL at test is unavailable (test)")

    sched.store.heartbeat = down  # type: ignore[method-assign]
    clocks.advance(TTL)  # past renewal + ttl - margin
    await sched.lease_round()
    assert value("pop3bridge_lease_renewal_failures_total") == failures + 1
    assert value("pop3bridge_account_leases_held") == 0


async def test_once_skips_accounts_a_running_replica_holds(stores: Callable[[], Store]) -> None:
    clocks = Clocks()
    store = stores()
    await store.acquire_leases("running", ["b"], TTL, clocks.wall, None)
    cron = replica(store, "cron", ["a", "b", "c"], clocks)
    seen_leases: list[dict[str, str]] = []
    real_poll = cron._poll

    async def poll(spec: AccountSpec) -> Any:
        seen_leases.append(await store.lease_holders(clocks.wall))
        return await real_poll(spec)  # port 1: refused, returned as an error

    cron._poll = poll  # type: ignore[method-assign]
    results = await cron.poll_all_once()
    assert sorted(s.name for s, _ in results) == ["a", "c"]  # "b" was not touched
    assert all(isinstance(r, Exception) for _, r in results)
    assert seen_leases and all(h == {"a": "cron", "b": "running", "c": "cron"} for h in seen_leases)
    assert await store.lease_holders(clocks.wall) == {"b": "running"}  # its own released

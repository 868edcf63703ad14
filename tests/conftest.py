"""Project-wide fixtures: TLS material, a private Dovecot, PostgreSQL's DSN.

The contract (names and behaviour) is documented in tests/support/__init__.py.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    # `tests.support` must import the same way under `pytest` and `python -m pytest`.
    sys.path.insert(0, str(_ROOT))

from bridge.store import Store, open_store  # noqa: E402
from tests.support import require_service  # noqa: E402
from tests.support.certs import TestCerts, make_test_certs  # noqa: E402
from tests.support.dovecot import (  # noqa: E402
    DovecotServer,
    DovecotUser,
    running,
)

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


# A test that uses one of these fixtures needs that server: it gets the marker even when its
# module forgot it, so `-m "dovecot or postgres"` selects every such test
# (tests/support_tests/test_missing_services.py relies on that).
_SERVICE_FIXTURES = {"dovecot": "dovecot", "dovecot_user": "dovecot", "postgres_dsn": "postgres"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        for marker in {m for f, m in _SERVICE_FIXTURES.items() if f in names}:
            item.add_marker(marker)


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> TestCerts:
    return make_test_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def dovecot(tls_certs: TestCerts) -> Iterator[DovecotServer]:
    """The session's private Dovecot; a skip/fail here is cached, so every user reports it."""
    with running(DovecotServer(tls_certs), "the private Dovecot") as server:
        yield server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated SQLite store in the test's temp dir (tests/store overrides it per backend)."""
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def dovecot_user(dovecot: DovecotServer) -> DovecotUser:
    if not dovecot.running:
        # A restart test that failed half-way must not take the rest of the session down.
        dovecot.start()
    return dovecot.add_user()


def _pg_check(dsn: str) -> str | None:
    """None if PostgreSQL answers `SELECT 1` at `dsn`, else the reason (no secrets in it)."""
    result: list[str | None] = ["not checked"]

    async def probe() -> None:
        import asyncpg

        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    def run() -> None:
        try:
            asyncio.run(probe())
            result[0] = None
        except Exception as exc:
            result[0] = f"cannot connect to PostgreSQL at 127.0.0.1:5432 ({type(exc).__name__})"

    # A thread of its own: the caller may be inside a running event loop.
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(15)
    return result[0]


@pytest.fixture(scope="session")
def _postgres_dsn_checked() -> tuple[str, str | None]:
    """The DSN and why PostgreSQL does not answer there (None: it does); checked once."""
    dsn = os.environ.get("POP3BRIDGE_TEST_PG_DSN", DEFAULT_PG_DSN)
    return dsn, _pg_check(dsn)


@pytest.fixture
def postgres_dsn(
    _postgres_dsn_checked: tuple[str, str | None], request: pytest.FixtureRequest
) -> str:
    # `-m postgres` / `-m "not postgres"` must select exactly the tests that need the server,
    # including the ones that ask for it at run time (`request.getfixturevalue`), which the
    # marking by fixture name above cannot see.
    if request.node.get_closest_marker("postgres") is None:
        pytest.fail(
            f"{request.node.nodeid} uses PostgreSQL but is not marked `postgres`; mark it "
            "(or the parameter that needs it: pytest.param(..., marks=pytest.mark.postgres))"
        )
    dsn, problem = _postgres_dsn_checked
    require_service("postgresql", problem is None, problem or "")
    return dsn

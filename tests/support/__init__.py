"""Shared test infrastructure. Import as ``tests.support.<module>`` (tests/conftest.py puts the
repository root on ``sys.path``, so this works under plain ``pytest`` too).

Fixtures (defined in tests/conftest.py, available to every test)
-----------------------------------------------------------------
``tls_certs`` (session) -> `tests.support.certs.TestCerts`
    ``.ca_file``, ``.cert_file``, ``.key_file``, ``.other_ca_file`` (PEM paths; the server
    certificate covers localhost, 127.0.0.1 and ::1), ``.client_context()`` (verifying, trusts
    the test CA), ``.wrong_client_context()`` (trusts only the unrelated CA),
    ``.server_context()`` (presents the test certificate; for fake servers).

``dovecot`` (session) -> `tests.support.dovecot.DovecotServer`, already started
    ``.host`` ("127.0.0.1"), ``.pop3_port`` (plain, STLS offered), ``.pop3s_port`` (implicit
    TLS), ``.ca_file``, ``.certs``;
    ``.add_user(name=None, password=None) -> DovecotUser`` (random when omitted);
    ``.deliver(user, raw: bytes) -> Path`` (into Maildir/new via tmp/ + rename; `user` is a
    DovecotUser or a name); ``.deliver_many(user, list[bytes]) -> list[Path]`` (in order);
    ``.message_count(user) -> int`` (new/ + cur/ on disk, excluding deleted-flagged);
    ``.stop()`` / ``.start()`` (restart on the same ports; a test that stops it MUST start it
    again, ideally in ``finally``); ``.log_text() -> str``.
    Dovecot settings: auth mechanisms PLAIN LOGIN CRAM-MD5 APOP (+ USER/PASS), plaintext auth
    allowed on the plain port, ``pop3_uidl_format = %08Xu%08Xv``, no auth failure delay and no
    per-IP auth penalty (wrong-password tests do not slow later logins). The greeting carries
    an APOP timestamp. Message numbers follow delivery order.

``dovecot_user`` (function) -> `DovecotUser`
    A fresh user with a random name and password: ``.name``, ``.password``, ``.home``,
    ``.maildir``. Use one per test so tests never see each other's mail.

``postgres_dsn`` (function; the server is checked once per session) -> str
    ``postgresql://postgres@127.0.0.1:5432/test`` (override with POP3BRIDGE_TEST_PG_DSN), checked
    with asyncpg. Only for tests marked ``postgres`` (it fails any other): a test that names the
    fixture is marked by tests/conftest.py, a backend parameter by using
    `tests.support.pgschema.BACKENDS`. A private schema per test:
    `tests.support.pgschema.schema_url(dsn, prefix)` and, afterwards,
    `await tests.support.pgschema.drop_schema(url)`.

Missing services
----------------
`tests.support.require_service(name, ok, why)` is the one rule for optional services: when `ok`
is false the test is skipped, unless ``CI=true`` in the environment, in which case it FAILS
with `why`. The ``dovecot`` and ``postgres_dsn`` fixtures use it; use it for anything else a
test needs from the machine.

Outside pytest
--------------
`bridge.testing.fakepop3.FakePOP3Server` (scriptable fake POP3 server with faults) and
`bridge.testing.samples` (deterministic sample mail) live in the package because
``pop3bridge demo`` runs them (the benchmarks use them too); the fault relay
(`tests.support.faultrelay`) is for tests only and lives here::

    async with FakePOP3Server(mailbox, user="u", password="p",
                              ssl_context=tls_certs.server_context(),
                              faults=Faults(stall_on={"RETR": 5})) as server:
        ...  # server.host, server.port, server.mailbox, server.uidls, server.deleted_uidls,
             # server.commands_seen, server.verbs, server.connections,
             # server.queue_faults(Faults(...))

A hostile server is that fake with one verb scripted (``Faults(answer={"RETR": script})``, the
script writing raw bytes with ``session.send``): tests/security's listing bomb, trickler,
lying and endless-CAPA servers are written so. ``bearer_tokens=`` makes it check XOAUTH2 /
OAUTHBEARER tokens (tests/poller/test_oauth.py).

Waiting
-------
`tests.support.wait.wait_until(pred, timeout)` (async) and ``wait_until_sync`` poll a condition
with a deadline. Use them, or an event, instead of a sleep that guesses how long something
takes; a sleep stays only where it is the stimulus (a server that stalls on purpose), with a
comment saying so.
"""

from __future__ import annotations

import os

import pytest

__all__ = ["in_ci", "require_service"]


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def require_service(name: str, ok: bool, why: str) -> None:
    """Skip (locally) or fail (when CI=true) the current test if service `name` is unusable."""
    if ok:
        return
    message = f"{name} is required but not usable: {why}"
    if in_ci():
        pytest.fail(f"{message} (CI=true, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(message)

"""The ops endpoint of a real `pop3bridge run`: Dovecot upstream, a signature-checking receiver,
and every poller metric the issue lists read from /metrics as Prometheus parses it, moving as
the receiver refuses, disappears and comes back. /readyz follows the store (PostgreSQL behind a
relay the test can cut)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bridge.testing.samples import generate_messages
from tests.e2e.harness import Receiver, dovecot_account, write_config
from tests.support.dovecot import DovecotServer, DovecotUser, free_port
from tests.support.pgschema import drop_schema

pytestmark = pytest.mark.dovecot


# --- talking to the endpoint ----------------------------------------------------------------


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Scrape:
    """One /metrics answer as the Prometheus parser reads it."""

    def __init__(self, text: str) -> None:
        self.samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when the series does not exist yet (as PromQL's `or 0`)."""
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Bridge:
    """`pop3bridge run` as a subprocess with its ops endpoint on a free port."""

    def __init__(self, config: Path, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.stderr = config.with_suffix(".log")
        self._err = self.stderr.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=self._err,
        )

    def get(self, path: str) -> tuple[int, str]:
        return fetch(self.base + path)

    def metrics(self) -> Scrape:
        code, body = self.get("/metrics")
        assert code == 200, body
        return Scrape(body)

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200, body
        doc: dict[str, Any] = json.loads(body)
        return doc

    def wait(self, what: str, ok: Callable[[], bool], timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"pop3bridge exited: {self.log()[-2000:]}"
            try:
                if ok():
                    return
            except (OSError, AssertionError):
                pass  # not listening yet, or not there yet
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; log:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._err.close()
        return self.proc.returncode


def run_config(path: Path, db_url: str, receiver: Receiver, accounts: list[dict[str, Any]]) -> int:
    write_config(
        path,
        db=path.parent / "unused.db",
        receiver=receiver,
        accounts=accounts,
        # Fast retries so the failure phases settle in a second, not minutes.
        webhook={"max_attempts": 5, "retry_max_delay": 0.3},
    )
    config = yaml.safe_load(path.read_text())
    port = free_port()
    config["state"]["url"] = db_url
    config["ops"] = {"enabled": True, "host": "127.0.0.1", "port": port}
    config["logging"] = {"format": "json", "level": "DEBUG"}
    path.write_text(yaml.safe_dump(config))
    return port


# --- the poller's metrics, status and page --------------------------------------------------


def test_every_poller_metric_moves_and_status_follows(
    tmp_path: Path,
    dovecot: DovecotServer,
    dovecot_user: DovecotUser,
    receiver: Receiver,
    bridges: list[Bridge],
) -> None:
    first = generate_messages(3, seed=501)
    dovecot.deliver_many(dovecot_user, first)
    locked_out = dovecot.add_user()
    good = dovecot_account(dovecot, dovecot_user)
    wrong_password = "not-the-password-8841"
    bad = dovecot_account(dovecot, locked_out, name="locked-out", password=wrong_password)
    cfg = tmp_path / "c.yaml"
    port = run_config(cfg, f"sqlite:///{tmp_path / 's.db'}", receiver, [good, bad])
    name = good["name"]

    # Phase 1: the receiver refuses the first delivery for good (400: permanent -> dead letter).
    receiver.fail_next(1, status=400)
    bridge = Bridge(cfg, port)
    bridges.append(bridge)
    bridge.wait("the ops endpoint", lambda: bridge.get("/healthz") == (200, "ok\n"))
    bridge.wait("2 deliveries", lambda: len(receiver.delivered) == 2)
    bridge.wait(
        "a login failure",
        lambda: (
            bridge.metrics().value(
                "pop3bridge_login_failures_total", account="locked-out", reason="auth"
            )
            >= 1
        ),
    )
    m = bridge.metrics()
    assert m.value("pop3bridge_polls_total", account=name, outcome="ok") >= 1
    assert m.value("pop3bridge_polls_total", account="locked-out", outcome="error") >= 1
    assert m.value("pop3bridge_poll_duration_seconds_count", account=name) >= 1
    assert m.value("pop3bridge_poll_duration_seconds_sum", account=name) > 0
    assert m.value("pop3bridge_messages_fetched_total", account=name) == 3
    fetched = m.value("pop3bridge_bytes_fetched_total", account=name)
    sizes = [r.json["data"]["size"] for r in receiver.delivered]
    assert fetched >= sum(sizes) and fetched >= sum(len(raw) for raw in first) * 0.9
    assert m.value("pop3bridge_deliveries_total", outcome="dead", status_class="4xx") == 1
    assert m.value("pop3bridge_deliveries_total", outcome="delivered", status_class="2xx") == 2
    assert m.value("pop3bridge_delivery_latency_seconds_count") == 3  # one per HTTP attempt
    assert m.value("pop3bridge_dead_letters_total") == 1
    assert m.value("pop3bridge_dead_letters_stored") == 1
    assert m.value("pop3bridge_outbox_depth") == 0
    status = bridge.status()["accounts"]
    assert status[name]["last_success_at"] and status[name]["last_error"] is None
    assert (status[name]["pending"], status[name]["dead"]) == (0, 1)
    assert "AuthenticationFailed" in status["locked-out"]["last_error"]
    assert status["locked-out"]["last_success_at"] is None

    # Phase 2: the receiver is gone; new mail piles up in the outbox and is retried.
    receiver.stop()
    dovecot.deliver_many(dovecot_user, generate_messages(2, seed=502))
    bridge.wait("2 pending", lambda: bridge.metrics().value("pop3bridge_outbox_depth") == 2)
    bridge.wait(
        "the oldest pending to age",
        lambda: bridge.metrics().value("pop3bridge_outbox_oldest_pending_age_seconds") > 0.5,
    )
    m = bridge.metrics()
    assert m.value("pop3bridge_deliveries_total", outcome="retry", status_class="none") >= 1
    assert m.value("pop3bridge_messages_fetched_total", account=name) == 5
    entry = bridge.status()["accounts"][name]
    assert entry["pending"] == 2 and entry["oldest_pending_age"] > 0
    assert bridge.get("/readyz")[0] == 200  # a dead receiver is not the bridge's illness
    code, page = bridge.get("/")
    assert code == 200 and name in page and "locked-out" in page and "<script" not in page

    # Phase 3: it comes back; the outbox drains and the gauges return to zero.
    receiver.start()
    bridge.wait(
        "the outbox to drain", lambda: bridge.metrics().value("pop3bridge_outbox_depth") == 0
    )
    m = bridge.metrics()
    assert m.value("pop3bridge_deliveries_total", outcome="delivered", status_class="2xx") == 4
    assert m.value("pop3bridge_outbox_oldest_pending_age_seconds") == 0
    assert len(receiver.delivered_ids) == 4 and receiver.invalid == 0

    assert bridge.stop() == 0
    log = bridge.log()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert lines and all({"timestamp", "level", "logger", "message"} <= set(x) for x in lines)
    assert {x["level"] for x in lines} >= {"DEBUG", "INFO", "ERROR"}
    for secret in (wrong_password, dovecot_user.password, receiver.secret):
        assert secret not in log


# --- readiness follows the store ------------------------------------------------------------


class Relay:
    """A TCP relay to PostgreSQL that can be cut (listener closed, live connections reset) and
    restored on the same port, to make the store unreachable without touching the server."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._generation = 0  # bumped by cut(): a connection accepted before it must not live on

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener = listener
        with self._lock:
            generation = self._generation
        threading.Thread(target=self._accept, args=(listener, generation), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._generation += 1
            conns, self._conns = self._conns, []
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket, generation: int) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                alive = generation == self._generation
                if alive:
                    self._conns += [client, upstream]
            if not alive:  # accepted while being cut: the cut wins
                client.close()
                upstream.close()
                return
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.mark.postgres
def test_readyz_fails_while_the_store_is_unreachable_and_recovers(
    tmp_path: Path,
    postgres_dsn: str,
    dovecot: DovecotServer,
    dovecot_user: DovecotUser,
    receiver: Receiver,
    bridges: list[Bridge],
) -> None:
    from urllib.parse import urlsplit

    pg = urlsplit(postgres_dsn)
    relay = Relay((pg.hostname or "127.0.0.1", pg.port or 5432))
    relay.start()
    schema = f"t_ops_{uuid.uuid4().hex[:12]}"
    relayed = pg._replace(netloc=f"{pg.username}@127.0.0.1:{relay.port}").geturl()
    url = f"{relayed}?schema={schema}"
    cfg = tmp_path / "c.yaml"
    port = run_config(cfg, url, receiver, [dovecot_account(dovecot, dovecot_user)])
    bridge = Bridge(cfg, port)
    bridges.append(bridge)
    try:
        bridge.wait("ready", lambda: bridge.get("/readyz")[0] == 200)
        relay.cut()
        bridge.wait("not ready", lambda: bridge.get("/readyz")[0] == 503)
        _code, body = bridge.get("/readyz")
        doc = json.loads(body)
        assert doc["ready"] is False
        assert "store_reachable" in next(iter(doc["checks"]))
        assert "unavailable" in next(iter(doc["checks"].values()))
        assert bridge.get("/healthz")[0] == 200  # alive: restarting would not fix the database
        assert bridge.metrics().value("pop3bridge_outbox_depth") == 0  # the scrape still answers
        relay.start()
        bridge.wait("ready again", lambda: bridge.get("/readyz")[0] == 200)
    finally:
        bridge.stop()
        relay.cut()
        asyncio.run(drop_schema(f"{postgres_dsn}?schema={schema}"))


def test_readyz_fails_while_the_sqlite_state_volume_cannot_take_writes(
    tmp_path: Path,
    dovecot: DovecotServer,
    dovecot_user: DovecotUser,
    receiver: Receiver,
    bridges: list[Bridge],
) -> None:
    """An open SQLite database still answers reads after its volume is gone (or full, or
    read-only), so the store check alone would stay green; the write probe does not (this is
    what the image's HEALTHCHECK reports, issue 13)."""
    import shutil

    volume = tmp_path / "volume"
    volume.mkdir()
    cfg = tmp_path / "c.yaml"
    port = run_config(
        cfg, f"sqlite:///{volume / 'state.db'}", receiver, [dovecot_account(dovecot, dovecot_user)]
    )
    bridge = Bridge(cfg, port)
    bridges.append(bridge)
    bridge.wait("ready", lambda: bridge.get("/readyz")[0] == 200)
    shutil.rmtree(volume)
    bridge.wait("not ready", lambda: bridge.get("/readyz")[0] == 503)
    doc = json.loads(bridge.get("/readyz")[1])
    checks = {name.rsplit(".", 1)[-1]: why for name, why in doc["checks"].items()}
    assert checks.keys() == {"store_reachable", "state_writable"}, doc
    assert checks["store_reachable"] == "ok"  # the reads alone would have said ready
    assert "FileNotFoundError" in checks["state_writable"]
    assert bridge.get("/healthz")[0] == 200
    volume.mkdir()
    bridge.wait("ready again", lambda: bridge.get("/readyz")[0] == 200)
    assert not [p for p in volume.iterdir() if p.name.startswith(".pop3bridge-ready-")]

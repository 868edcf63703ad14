"""Regression (found by the soak, tests/soak): delivery claims lasted a fixed 120 s, so
every SIGKILL during a send held the claimed messages back for two minutes after the restart.
A claim is now sized from the webhook timeouts, and an expired claim of a dead process is
picked up by the next one."""

from __future__ import annotations

from pathlib import Path

from bridge.config import load_settings
from bridge.poller.app import PollerOptions
from bridge.poller.resources import PollerRuntime
from bridge.runtime import CLAIM_MARGIN, claim_seconds
from bridge.store import NewMessage, open_store


def test_claim_covers_two_sends_of_the_slowest_webhook() -> None:
    assert claim_seconds([2.0, 10.0, 5.0]) == 2 * 10.0 + CLAIM_MARGIN
    assert claim_seconds([]) == PollerOptions().claim_seconds
    assert claim_seconds([10.0]) < PollerOptions().claim_seconds  # the default config got shorter


def test_runtime_sizes_the_worker_claim_from_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"""
state: {{url: "sqlite:///{tmp_path / "s.db"}"}}
webhooks:
  - {{name: a, url: "http://127.0.0.1:9/a", secret: "whsec_{"A" * 32}", timeout: 3}}
  - {{name: b, url: "http://127.0.0.1:9/b", secret: "whsec_{"A" * 32}", timeout: 7}}
"""
    )
    app = PollerRuntime(load_settings(str(cfg), env={}), with_sender=False).app()
    assert app.worker.claim_seconds == 2 * 7 + CLAIM_MARGIN


async def test_claim_of_a_dead_holder_comes_back_when_it_expires(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    await store.migrate()
    try:
        claim = claim_seconds([2.0])
        await store.record(
            [NewMessage("a", "u1", "msg_" + "1" * 32, "main", 10, "fp", b"{}", b"x", False)], 0.0
        )
        assert [i.uidl for i in await store.claim_due(1.0, 10, "dead-pid-1", claim)] == ["u1"]
        # The holder is SIGKILLed; the restarted process (new pid) waits out only the claim.
        assert await store.claim_due(1.0 + claim - 0.5, 10, "new-pid-2", claim) == []
        again = await store.claim_due(1.0 + claim, 10, "new-pid-2", claim)
        assert [i.uidl for i in again] == ["u1"]
    finally:
        await store.close()

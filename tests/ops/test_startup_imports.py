"""`pop3bridge once` exposes no metrics, so it does not import prometheus_client
(tests/commands/test_once_imports.py checks that on a real run); the delivery metrics hook of
the long-running commands still counts."""

from __future__ import annotations

from bridge.delivery.sender import DeliveryResult
from bridge.ops.metrics import REGISTRY
from bridge.runtime import record_delivery
from bridge.store.base import OutboxItem


def test_delivery_metrics_still_count() -> None:
    item = OutboxItem(1, "msg_1", "acct", "u1", "main", b"{}", 0, 0.0, 0.0, None)

    def delivered() -> float:
        labels = {"outcome": "delivered", "status_class": "2xx"}
        return REGISTRY.get_sample_value("pop3bridge_deliveries_total", labels) or 0.0

    def dead() -> float:
        return REGISTRY.get_sample_value("pop3bridge_dead_letters_total") or 0.0

    before, dead_before = delivered(), dead()
    record_delivery(item, "delivered", DeliveryResult(True, 200, None, False, None, 0.01))
    record_delivery(item, "dead", DeliveryResult(False, 400, None, True, "no", 0.01))
    assert delivered() == before + 1
    assert dead() == dead_before + 1

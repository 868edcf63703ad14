"""Metric objects: one registry, documented, bounded labels."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.ops import metrics


def test_every_documented_metric_is_exposed() -> None:
    families = {
        f.name for f in text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode())
    }
    assert len(metrics.METRICS) >= 15
    for doc in metrics.METRICS:
        base = doc.name.removesuffix("_total")
        # Labelled metrics appear only once a child exists; create one for each.
        metric = next(m for m in vars(metrics).values() if hasattr(m, "_name") and m._name == base)
        if doc.labels:
            metric.labels(*["x"] * len(doc.labels))
        families = {
            f.name
            for f in text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode())
        }
        assert base in families, doc.name
        assert doc.name.startswith(metrics.PREFIX) and doc.help


def test_labels_are_bounded() -> None:
    assert metrics.verb_label("retr") == "RETR"
    assert metrics.verb_label(b"XYZZY") == "OTHER"
    assert metrics.verb_label("\xff\x00") == "OTHER"
    assert [metrics.status_class(s) for s in (200, 404, 503, None, 42)] == [
        "2xx",
        "4xx",
        "5xx",
        "none",
        "none",
    ]


def test_markdown_table_lists_every_metric() -> None:
    table = metrics.metrics_markdown()
    for doc in metrics.METRICS:
        assert f"| `{doc.name}` |" in table

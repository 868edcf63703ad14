"""`settled` (`pop3bridge run` once its account loops exist): freeze the heap and raise the
young generation's threshold, only in a process the command owns."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bridge.commands import _common


@pytest.fixture
def collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def test_settled_freezes_and_raises_the_young_threshold(
    collector: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_common, "_owns_process", True)
    gc.set_threshold(700, 11, 12)
    _common.settled()
    assert gc.get_threshold() == (_common.YOUNG_THRESHOLD, 11, 12)
    assert gc.get_freeze_count() > 0


def test_settled_leaves_a_process_it_does_not_own_alone(
    collector: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_common, "_owns_process", False)
    gc.set_threshold(700, 11, 12)
    frozen = gc.get_freeze_count()
    _common.settled()
    assert gc.get_threshold() == (700, 11, 12)
    assert gc.get_freeze_count() == frozen

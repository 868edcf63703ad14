from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.e2e import harness

if TYPE_CHECKING:
    from tests.e2e.test_ops import Bridge

receiver = harness.receiver  # a started Receiver (defined there: tests/formats uses it too)


@pytest.fixture
def bridges() -> Iterator[list[Bridge]]:
    """`pop3bridge run` processes a test started (tests/e2e/test_ops.Bridge), stopped after it."""
    started: list[Bridge] = []
    yield started
    for b in started:
        b.stop()

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.e2e.harness import Receiver

if TYPE_CHECKING:
    from tests.e2e.test_ops import Bridge


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def bridges() -> Iterator[list[Bridge]]:
    """`pop3bridge run` processes a test started (tests/e2e/test_ops.Bridge), stopped after it."""
    started: list[Bridge] = []
    yield started
    for b in started:
        b.stop()

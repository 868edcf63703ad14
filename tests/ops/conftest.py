from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from bridge.ops.logging import clear_secrets


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Tests here install the process log handler and register secrets; undo both after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    clear_secrets()

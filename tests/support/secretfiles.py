"""Stand-ins for the secret files a deployed configuration names (`*_file` keys).

Configurations written for a container point at `/run/secrets/...`, which does not exist where
the tests run; tests that feed such a configuration to the real loader swap every `*_file`
path for a local file with plausible content."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["swap_secret_files"]


def swap_secret_files(node: Any, write: Callable[[str, str], Path]) -> list[str]:
    """Replace, in place, every ``*_file`` string in `node` (nested dicts and lists) by the path
    `write(key, original_path)` returns after writing the stand-in; returns the original paths
    in the order met."""
    originals: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, dict):
            for key, value in list(item.items()):
                if key.endswith("_file") and isinstance(value, str):
                    originals.append(value)
                    item[key] = str(write(key, value))
                else:
                    walk(value)
        elif isinstance(item, list):
            for element in item:
                walk(element)

    walk(node)
    return originals

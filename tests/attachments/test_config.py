"""The `attachments:` section: what it requires, and every form of the signing key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import ConfigError, load_settings
from bridge.runtime import link_minter

KEY = "s" * 40


def _load(tmp_path: Path, section: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"attachments": section}))
    return load_settings(str(path), env or {})


def test_off_by_default_and_then_no_links(tmp_path: Path) -> None:
    settings = _load(tmp_path, {})
    assert not settings.attachments.enabled and link_minter(settings) is None


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"enabled": True, "signing_key": KEY}, "attachments.public_url"),
        ({"enabled": True, "public_url": "https://f.test"}, "attachments.signing_key"),
        ({"public_url": "https://f.test", "signing_key": "short"}, "32 bytes"),
        ({"public_url": "ftp://f.test", "signing_key": KEY}, "http"),
        ({"public_url": "https://f.test/?x=1", "signing_key": KEY}, "without query"),
        ({"signing_key": KEY, "signing_key_env": "K"}, "only one of"),
        ({"signing_key_env": "MISSING"}, "not set"),
        ({"url_ttl": 0}, "url_ttl"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, section: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        _load(tmp_path, section)


def test_key_from_file_env_or_a_rotation_list(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    key_file.write_text(KEY + "\n")
    base = {"enabled": True, "public_url": "https://f.test/x/"}
    from_file = link_minter(_load(tmp_path, {**base, "signing_key_file": str(key_file)}))
    from_env = link_minter(_load(tmp_path, {**base, "signing_key_env": "K"}, {"K": KEY}))
    rotated = link_minter(
        _load(tmp_path, {**base, "signing_key": ["n" * 32, KEY], "url_ttl": "1h"})
    )
    assert from_file is not None and from_env is not None and rotated is not None
    assert from_file.signer.keys == from_env.signer.keys == [KEY.encode()]
    assert from_file.signer.public_url == "https://f.test/x"
    assert rotated.signer.keys == [b"n" * 32, KEY.encode()] and rotated.ttl == 3600
    assert from_file.ttl == 7 * 86400

"""Where settings come from besides the YAML file: a secrets directory and the environment.

The secrets directory is how Kubernetes and Docker hand secrets to a container: one file per
key. Files are named like the environment overrides, and go through the same list-by-name rule.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import (
    POP3_VERBS,
    SECRETS_DIR_ENV,
    ConfigError,
    Settings,
    load_settings,
    validate,
)
from bridge.pop3.commands import RESPONSE_KINDS

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"q" * 32).decode()


def config(tmp_path: Path) -> str:
    data: dict[str, Any] = {
        "webhooks": [{"name": "main", "url": "https://example.com/hook"}],
        "accounts": [
            {"name": "support", "url": "pop3s://s@h", "webhook": "main"},
            {"name": "sales", "url": "pop3s://t@h", "password": "inline-pw", "webhook": "main"},
        ],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def kubernetes_secret_volume(root: Path, files: dict[str, str]) -> Path:
    """The layout a Kubernetes Secret volume has: files behind `..data` symlinks."""
    root.mkdir()
    stamp = root / "..2026_12_02_10_00_00.1"
    stamp.mkdir()
    for name, text in files.items():
        (stamp / name).write_text(text)
    (root / "..data").symlink_to(stamp.name)
    for name in files:
        (root / name).symlink_to(f"..data/{name}")
    return root


def test_secrets_directory_fills_keys_named_like_env_overrides(tmp_path: Path) -> None:
    secrets = kubernetes_secret_volume(
        tmp_path / "secrets",
        {
            "POP3BRIDGE_ACCOUNTS__support__PASSWORD": "from-the-volume\n",
            "POP3BRIDGE_WEBHOOKS__0__SECRET": SECRET + "\n",
            "tls.crt": "not a configuration key",
        },
    )
    s = load_settings(config(tmp_path), env={SECRETS_DIR_ENV: str(secrets)})
    support, sales = s.accounts
    assert support.password is not None
    assert support.password.get_secret_value() == "from-the-volume"
    assert sales.password is not None and sales.password.get_secret_value() == "inline-pw"
    assert s.webhooks[0].secret is not None and not isinstance(s.webhooks[0].secret, list)
    assert s.webhooks[0].secret.get_secret_value() == SECRET


def test_environment_wins_over_the_secrets_directory(tmp_path: Path) -> None:
    secrets = tmp_path / "run-secrets"
    secrets.mkdir()
    (secrets / "POP3BRIDGE_ACCOUNTS__support__PASSWORD").write_text("from-file")
    (secrets / "POP3BRIDGE_WEBHOOKS__main__SECRET").write_text(SECRET)
    env = {"POP3BRIDGE_WEBHOOKS__main__SECRET": OTHER}
    s = load_settings(config(tmp_path), env=env, secrets_dir=secrets)
    secret = s.webhooks[0].secret
    assert secret is not None and not isinstance(secret, list)
    assert secret.get_secret_value() == OTHER
    assert s.accounts[0].password is not None
    assert s.accounts[0].password.get_secret_value() == "from-file"


def test_secrets_directory_problems_name_the_file_or_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"secrets directory .*nowhere"):
        load_settings(config(tmp_path), env={SECRETS_DIR_ENV: str(tmp_path / "nowhere")})
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "POP3BRIDGE_ACCOUNTS__nobody__PASSWORD").write_text("pw")
    with pytest.raises(ConfigError) as exc:
        load_settings(config(tmp_path), env={}, secrets_dir=secrets)
    assert "POP3BRIDGE_ACCOUNTS__nobody__PASSWORD" in dict(exc.value.problems)


def test_a_secret_file_outside_the_directory_is_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.write_text("stolen")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "POP3BRIDGE_ACCOUNTS__support__PASSWORD").symlink_to(outside)
    (secrets / "POP3BRIDGE_WEBHOOKS__main__SECRET").write_text(SECRET)
    with pytest.raises(ConfigError) as exc:
        load_settings(config(tmp_path), env={}, secrets_dir=secrets)
    assert "accounts[0].password" in dict(exc.value.problems)


def test_validating_a_dict_reads_no_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `Settings` is a BaseSettings, validated through its __init__: it must not pick up the
    # process's file or overrides when it is handed a dict.
    monkeypatch.setenv("POP3BRIDGE_CONFIG", str(tmp_path / "missing.yaml"))
    monkeypatch.setenv("POP3BRIDGE_OPS__PORT", "9999")
    monkeypatch.setenv(SECRETS_DIR_ENV, str(tmp_path / "missing-dir"))
    assert Settings.model_validate({}).ops.port == 8080
    assert validate(Settings, {}, {"env": {}}).ops.port == 8080


def test_policy_verbs_are_the_cores_table_last_included() -> None:
    assert {verb for verb, _ in RESPONSE_KINDS} == POP3_VERBS
    policy = {"deny": ["last", "dele"], "allow": sorted(POP3_VERBS)}
    s = validate(Settings, {"proxy": {"policy": policy}}, {"env": {}})
    assert s.proxy.policy.deny == ["LAST", "DELE"]
    with pytest.raises(ConfigError) as exc:
        validate(Settings, {"proxy": {"policy": {"deny": ["XLST"]}}}, {"env": {}})
    assert "LAST" in dict(exc.value.problems)["proxy.policy.deny"]


def test_config_check_reads_the_secrets_directory_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.cli import main

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "POP3BRIDGE_ACCOUNTS__support__PASSWORD").write_text("pw-from-volume\n")
    (secrets / "POP3BRIDGE_WEBHOOKS__main__SECRET").write_text(SECRET)
    path = config(tmp_path)
    monkeypatch.setenv(SECRETS_DIR_ENV, str(secrets))
    assert main(["config", "check", "--config", path]) == 0
    out = capsys.readouterr().out
    assert "pw-from-volume" not in out and SECRET not in out
    monkeypatch.delenv(SECRETS_DIR_ENV)
    assert main(["config", "check", "--config", path]) == 2
    assert "accounts[0].password" in capsys.readouterr().err

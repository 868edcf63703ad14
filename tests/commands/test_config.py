"""`pop3bridge config check|reference` through the real CLI dispatcher."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from bridge.cli import main
from bridge.commands.config import reference_markdown

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
PASSWORD = "pa55-word-never-shown"


def config_file(tmp_path: Path, webhook: str = "main") -> str:
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    data = {
        "webhooks": [
            {
                "name": "main",
                "url": "https://example.com/hooks/mail",
                "secret": SECRET,
                "headers": {"Authorization": "Bearer header-token-xyz"},
            }
        ],
        "accounts": [
            {
                "name": "support",
                "url": "pop3s://support%40example.com@mail.example.com:995",
                "password_file": str(tmp_path / "pw"),
                "webhook": webhook,
            }
        ],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_check_valid_prints_summary_without_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "check", "--config", config_file(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "support@example.com@mail.example.com:995" in out
    assert f"file {tmp_path / 'pw'}" in out
    for secret in (PASSWORD, SECRET, "header-token-xyz"):
        assert secret not in out + err


def test_check_invalid_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["config", "check", "--config", config_file(tmp_path, webhook="mian")])
    out, err = capsys.readouterr()
    assert code == 2
    assert "accounts[0].webhook: no webhook named 'mian'" in err
    for secret in (PASSWORD, SECRET, "header-token-xyz"):
        assert secret not in out + err


def test_check_uses_config_env_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POP3BRIDGE_CONFIG", config_file(tmp_path))
    monkeypatch.setenv("POP3BRIDGE_ACCOUNTS__support__POLL_INTERVAL", "soon")
    assert main(["config", "check"]) == 2
    assert "accounts[0].poll_interval" in capsys.readouterr().err


def test_reference_printed_and_docs_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "reference"]) == 0
    printed = capsys.readouterr().out
    assert printed == reference_markdown()
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == printed, (
        "docs/configuration.md is stale: run `pop3bridge config reference > docs/configuration.md`"
    )


def test_reference_covers_every_field() -> None:
    from pydantic import BaseModel

    from bridge import config

    text = reference_markdown()
    models = [
        m
        for m in vars(config).values()
        if isinstance(m, type)
        and issubclass(m, BaseModel)
        # Every model of the package, defined in any of its modules.
        and m.__module__.startswith(f"{config.__name__}.")
        and not m.__name__.startswith("_")
    ]
    assert len(models) >= 12
    for model in models:
        for name, field in model.model_fields.items():
            # Top-level sections are headings; every other key is a table row.
            row = f"## `{name}" if model is config.Settings else f"| `{name}` |"
            assert row in text, f"{model.__name__}.{name} missing from the reference"
            assert field.description, f"{model.__name__}.{name} has no description"
            if any(isinstance(m, config.SecretField) for m in field.metadata):
                # One declaration, three keys a user may write: each has its own row.
                for key in (f"{name}_file", f"{name}_env"):
                    assert f"| `{key}` |" in text, f"{model.__name__}.{key} missing"
    for metric in ("pop3bridge_polls_total", "pop3bridge_proxy_sessions_active"):
        assert metric in text

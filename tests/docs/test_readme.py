"""README.md stays true: its generated blocks match the code, its first two commands exist, and
the configuration examples it shows are accepted by the real loader."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge import docgen
from bridge.config import load_settings
from bridge.ops.metrics import METRICS
from tests.support.secretfiles import swap_secret_files

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def test_generated_docs_are_current() -> None:
    stale = [
        str(path.relative_to(ROOT))
        for path, text in docgen.generated(ROOT).items()
        if path.read_text(encoding="utf-8") != text
    ]
    assert not stale, f"{stale} are stale: run `python -m bridge.docgen`"


def test_readme_lists_every_metric_and_every_section() -> None:
    text = README.read_text(encoding="utf-8")
    for doc in METRICS:
        assert f"`{doc.name}`" in text
    for section in ("state", "webhooks[]", "accounts[]", "poller", "proxy", "ops", "logging"):
        assert f"[`{section}`](docs/configuration.md#" in text


def test_replace_block_keeps_the_rest_and_insists_on_one_block() -> None:
    doc = "intro\n<!-- x:start note -->\nold\n<!-- x:end -->\noutro\n"
    assert docgen.replace_block(doc, "x", "new\n") == (
        "intro\n<!-- x:start note -->\nnew\n<!-- x:end -->\noutro\n"
    )
    with pytest.raises(docgen.MissingMarkers):
        docgen.replace_block("no markers here", "x", "new\n")
    with pytest.raises(docgen.MissingMarkers):
        docgen.replace_block(doc + doc, "x", "new\n")


def test_regeneration_restores_a_tampered_block_without_writing(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text(encoding="utf-8").replace("pop3bridge_polls_total", "x"))
    (tmp_path / "docs" / "configuration.md").write_text("old")
    texts = docgen.generated(tmp_path)
    assert texts[readme] == README.read_text(encoding="utf-8")
    assert "pop3bridge_polls_total" not in readme.read_text()


def test_the_first_two_commands_are_make_demo_and_make_test() -> None:
    text = README.read_text(encoding="utf-8")
    first_block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert first_block is not None
    commands = [ln.split("#")[0].strip() for ln in first_block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    demo = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.M)
    test = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert demo and "pop3bridge demo" in demo.group(1)
    assert test and "pytest" in test.group(1) and "ruff" in test.group(1)


def yaml_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    return [b for b in blocks if re.search(r"^(state|accounts|webhooks):", b, re.M)]


@pytest.mark.parametrize("example", yaml_examples(), ids=lambda b: b.splitlines()[0][:40])
def test_readme_configuration_examples_load(example: str, tmp_path: Path) -> None:
    data: dict[str, Any] = yaml.safe_load(example)
    whsec = "whsec_" + base64.b64encode(b"r" * 24).decode()

    def write(key: str, value: str) -> Path:
        path = tmp_path / Path(value).name
        path.write_text(whsec if key == "secret_file" else "pw")
        return path

    swap_secret_files(data, write)
    if str(data.get("state", {}).get("url", "")).startswith("sqlite:///var/"):
        data["state"]["url"] = f"sqlite:///{tmp_path}/state.db"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    settings = load_settings(str(config), {})
    assert settings.accounts and settings.webhooks

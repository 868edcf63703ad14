"""Readers shared by the deploy tests: the Dockerfile as instructions, Helm values merged the way
Helm merges them, and the rule for "a service/tool is missing" (skip locally, fail in CI)."""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART = ROOT / "helm" / "pop3bridge"
EXAMPLES = CHART / "examples"


def missing(what: str) -> None:
    """A required tool is absent: CI must notice, a developer's laptop may skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required when CI=true")
    pytest.skip(f"{what} not available")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper-cased
    args: str  # continuation lines joined, comments removed
    stage: int  # index of the FROM this instruction belongs to (-1 before the first FROM)


def dockerfile_instructions(text: str | None = None) -> list[Instruction]:
    """Split a Dockerfile into instructions the way the builder does: comment lines are dropped
    even inside a continued instruction, and a trailing backslash joins the next line."""
    if text is None:
        text = DOCKERFILE.read_text()
    out: list[Instruction] = []
    stage = -1
    pending: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        joined = " ".join(p for p in pending if p)
        pending = []
        keyword, _, args = joined.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, args.strip(), stage))
    assert not pending, "Dockerfile ends inside a continued instruction"
    return out


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def exec_form(args: str) -> list[str]:
    """Parse a JSON-array (exec form) argument; anything else is a shell form and fails."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            for item in shlex.split(ins.args):
                key, sep, value = item.partition("=")
                assert sep, f"legacy 'ENV key value' form: {ins.args!r}"
                env[key] = value
    return env


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def dockerignored(rel_path: str, patterns: list[str]) -> bool:
    """Whether the build context drops `rel_path` (or a parent of it). Covers the pattern forms
    our .dockerignore uses: plain names, globs, and a leading `**/`; `!` re-includes."""
    parts = rel_path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        if pat.startswith("**/"):
            tail = pat[3:]
            hit = any(fnmatch.fnmatchcase(part, tail) for part in parts)
        else:
            hit = any(fnmatch.fnmatchcase(prefix, pat.rstrip("/")) for prefix in prefixes)
        if hit:
            ignored = not negate
    return ignored


def load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def helm_merge(base: Any, override: Any) -> Any:
    """Helm's -f semantics: maps merge key by key, anything else (lists included) replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = copy.deepcopy(base)
        for key, value in override.items():
            merged[key] = helm_merge(base.get(key), value) if key in base else value
        return merged
    return copy.deepcopy(override)


def default_values() -> dict[str, Any]:
    values = load_yaml(CHART / "values.yaml")
    assert isinstance(values, dict)
    return values


def schema() -> dict[str, Any]:
    loaded = json.loads((CHART / "values.schema.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))

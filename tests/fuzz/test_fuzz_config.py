"""Hypothesis over the config loader: arbitrary YAML documents and YAML-ish mappings built from
the real key vocabulary, overlaid with arbitrary ``POP3BRIDGE_*`` variables. The only exception
allowed out of `load_settings` is `ConfigError` (whose message names keys), never a pydantic,
YAML, type or key error, and never a hang (pytest-timeout bounds the run)."""

from __future__ import annotations

import string
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import ConfigError, Settings, load_settings

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
MIN_TRIED = 100


def _vocabulary(model: type[Any], out: set[str]) -> set[str]:
    for name, info in model.model_fields.items():
        out.add(name)
        for arg in (*getattr(info.annotation, "__args__", ()), info.annotation):
            if isinstance(arg, type) and hasattr(arg, "model_fields") and arg is not model:
                _vocabulary(arg, out)
            for inner in getattr(arg, "__args__", ()):
                if isinstance(inner, type) and hasattr(inner, "model_fields"):
                    _vocabulary(inner, out)
    return out


KEYS = sorted(_vocabulary(Settings, set()))
key = st.one_of(st.sampled_from(KEYS), st.text(string.ascii_lowercase + "_", max_size=12))
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            *[
                "10MB",
                "1.5GB",
                "-1KB",
                "30s",
                "1h",
                "2d",
                "bogus",
                "whsec_",
                "whsec_!!!",
                "implicit",
                "starttls",
                "none",
            ],
            *[
                "delete",
                "keep",
                "json",
                "DEBUG",
                "auto",
                "xoauth2",
                "*",
                "a@b.c",
                "0",
                "65536",
                "true",
                "no",
                "~/nope",
                "/dev/null",
                "/",
            ],
            *["pop3s://u%40x@h:995", "pop3://user@host", "pop3s://[::1", "imap://x", "sqlite:///"],
            *["sqlite:///:memory:", "postgresql://u:p@h/db", "https://hooks.test/x"],
        ]
    ),
)
values = st.recursive(
    scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(key, inner, max_size=5)),
    max_leaves=25,
)
documents = st.dictionaries(key, values, max_size=8)
env_names = st.lists(
    st.one_of(st.sampled_from(KEYS), st.sampled_from(["0", "1", "main", "x", ""])),
    min_size=1,
    max_size=4,
).map(lambda parts: "POP3BRIDGE_" + "__".join(parts).upper())
envs = st.dictionaries(
    env_names, st.text(max_size=20).map(lambda s: s.replace("\0", "")), max_size=4
)


def _load(path: Path, env: dict[str, str]) -> None:
    try:
        load_settings(str(path), env=env)
    except ConfigError as exc:
        assert str(exc)  # says something a user can act on
        assert all(isinstance(k, str) and isinstance(m, str) for k, m in exc.problems)


def test_config_mappings_only_raise_config_error(tmp_path: Path, fuzz_counts: Counter[str]) -> None:
    name = "config loader: YAML-ish mappings over the real keys + POP3BRIDGE_ env"
    path = tmp_path / "c.yaml"

    @FUZZ
    @given(documents, envs)
    def check(doc: dict[str, Any], env: dict[str, str]) -> None:
        fuzz_counts[name] += 1
        path.write_text(yaml.safe_dump(doc, allow_unicode=True))
        _load(path, env)

    check()
    assert fuzz_counts[name] >= MIN_TRIED


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A working config with one or two values replaced: reaches the deep validators."""
    doc: dict[str, Any] = {
        "state": {"url": "sqlite:///:memory:"},
        "webhooks": [
            {"name": "main", "url": "https://hooks.test/in", "secret": "whsec_" + "A" * 32}
        ],
        "accounts": [
            {"name": "a", "host": "pop.test", "username": "u", "password": "p", "webhook": "main"}
        ],
    }
    for _ in range(draw(st.integers(1, 3))):
        section = draw(
            st.sampled_from(["state", "webhooks", "accounts", "poller", "proxy", "ops", "logging"])
        )
        target = doc.setdefault(section, {})
        if isinstance(target, list):
            target = target[0]
        target[draw(key)] = draw(values)
    return doc


def test_config_near_valid_documents_only_raise_config_error(
    tmp_path: Path, fuzz_counts: Counter[str]
) -> None:
    name = "config loader: valid config with 1-3 values replaced + env"
    path = tmp_path / "c.yaml"

    @FUZZ
    @given(near_valid(), envs)
    def check(doc: dict[str, Any], env: dict[str, str]) -> None:
        fuzz_counts[name] += 1
        path.write_text(yaml.safe_dump(doc, allow_unicode=True))
        _load(path, env)

    check()
    assert fuzz_counts[name] >= MIN_TRIED


def test_config_raw_text_only_raises_config_error(
    tmp_path: Path, fuzz_counts: Counter[str]
) -> None:
    name = "config loader: arbitrary file bytes (YAML syntax, encodings, tags)"
    path = tmp_path / "c.yaml"
    yamlish = st.lists(
        st.sampled_from(
            [
                *[
                    "state:",
                    "accounts:",
                    "url:",
                    "!!python/object:os.system",
                    "&a",
                    "*a",
                    "{",
                    "}",
                    "[",
                    "]",
                    "'",
                    '"',
                    "---",
                    "...",
                ],
                *["\n", "  ", "- ", ": ", "\t", "\xff", "%YAML 9"],
            ]
        ),
        max_size=30,
    ).map(lambda parts: "".join(parts).encode("utf-8", "surrogateescape"))

    @FUZZ
    @given(st.one_of(st.binary(max_size=300), yamlish))
    def check(data: bytes) -> None:
        fuzz_counts[name] += 1
        path.write_bytes(data)
        _load(path, {})

    check()
    assert fuzz_counts[name] >= MIN_TRIED

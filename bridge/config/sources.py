"""Where settings come from: the YAML file, a secrets directory, the environment.

Highest priority first: environment variables ``POP3BRIDGE_<SECTION>__<KEY>...``, then files of
the same names in the secrets directory (``$POP3BRIDGE_SECRETS_DIR``: a Kubernetes Secret
volume or Docker's ``/run/secrets``), then the YAML file (``--config FILE`` or
``$POP3BRIDGE_CONFIG``), then the models' defaults.

What pydantic-settings does here, and what it cannot do that we do ourselves:

- `ConfigFileSource` is pydantic-settings' `YamlConfigSettingsSource`; we only replace its
  file reading, because it skips a missing file silently and lets a YAML syntax error escape
  as a traceback, where the user should read "config file 'x' does not exist" or the line
  and column of the mistake.
- `secrets_dir_variables` reads the secrets directory with pydantic-settings'
  `NestedSecretsSettingsSource` (one file per name; hidden entries such as Kubernetes'
  ``..data`` skipped; symlinks out of the directory refused; a total size cap; surrounding
  whitespace stripped from each file).
- `NamedListOverlay` is ours. pydantic-settings' env source, given ``__`` as the nesting
  delimiter, builds nested *mappings* only: it cannot address a list element, by index or by
  its ``name`` (``POP3BRIDGE_ACCOUNTS__support__POLL_INTERVAL``), and its sources are merged by
  replacing lists wholesale, so one variable would throw away every other account of the YAML
  file. The overlay therefore edits the file's data in place, variable by variable; it reads a
  passed-in mapping rather than ``os.environ`` so tests stay hermetic. The secrets directory's
  files go through the same overlay, so a file is named exactly like the variable it replaces.
"""

from __future__ import annotations

import copy
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    YamlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

from bridge.config._yaml import yaml
from bridge.config.errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "SECRETS_DIR_ENV",
    "ConfigFileSource",
    "NamedListOverlay",
    "apply_overlay",
    "secrets_dir_variables",
]

# LibYAML's parser under PyYAML's safe constructor when the wheel has it (it always does on
# the platforms we ship): the same data and errors as `yaml.safe_load`, without the pure-Python
# scanner, which made one call per character and was most of a config file's load time.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

ENV_PREFIX = "POP3BRIDGE_"
CONFIG_ENV = "POP3BRIDGE_CONFIG"
SECRETS_DIR_ENV = "POP3BRIDGE_SECRETS_DIR"


class ConfigFileSource(YamlConfigSettingsSource):
    """The YAML configuration file; `ConfigError` naming the file when it cannot be used."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        if path is not None and not path.expanduser().exists():
            raise ConfigError([("", f"config file {str(path)!r} does not exist")])
        if path is not None and not path.expanduser().is_file():
            raise ConfigError([("", f"config file {str(path)!r} cannot be read: not a file")])
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        path = str(file_path)
        try:
            text = file_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([("", f"config file {path!r} cannot be read: {exc}")]) from None
        try:
            data = yaml.load(text, Loader=_YAML_LOADER)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise ConfigError([("", f"config file {path!r}: {problem}{where}")]) from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError([("", f"config file {path!r}: the top level must be a mapping")])
        return data


def secrets_dir_variables(settings_cls: type[BaseSettings], path: Path) -> dict[str, str]:
    """Every file of the secrets directory `path` as name -> text (pydantic-settings reads it)."""
    try:
        source = NestedSecretsSettingsSource(
            SecretsSettingsSource(settings_cls, secrets_dir=path),
            secrets_dir=path,
            secrets_dir_missing="error",
            secrets_case_sensitive=True,
        )
    except (SettingsError, OSError) as exc:
        raise ConfigError([("", f"secrets directory {str(path)!r}: {exc}")]) from None
    return {name: value for name, value in source.env_vars.items() if value is not None}


class NamedListOverlay(PydanticBaseSettingsSource):
    """`base`'s data with each layer of ``POP3BRIDGE_A__B__C`` variables applied on top, in order.

    One source rather than one per layer because a layer edits the data below it (an element
    of a list the file wrote), which pydantic-settings' merge of independent sources cannot do.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        base: PydanticBaseSettingsSource,
        layers: Sequence[Mapping[str, str]],
    ) -> None:
        super().__init__(settings_cls)
        self.base = base
        self.layers = layers

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Required by the base class; this source answers for the whole tree in `__call__`.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data = copy.deepcopy(self.base())
        problems: list[tuple[str, str]] = []
        for layer in self.layers:
            problems += apply_overlay(data, layer, self.settings_cls)
        if problems:
            raise ConfigError(problems)
        return data


def _overlay_value(text: str) -> Any:
    # Lists and maps can be given whole in flow style; everything else stays a string and
    # pydantic converts it (so a numeric password is not turned into an int).
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        try:
            return yaml.load(stripped, Loader=_YAML_LOADER)
        except yaml.YAMLError:
            return text
    return text


def _sort_key(item: tuple[str, str]) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in item[0].split("__")]


def _list_keys(model: type[BaseModel]) -> set[str]:
    """Names of the keys, at any depth, that hold a list of sections (accounts, routes...)."""
    found: set[str] = set()
    for name, field in model.model_fields.items():
        for arg in (field.annotation, *typing.get_args(field.annotation)):
            many = typing.get_origin(arg) is list
            sub = typing.get_args(arg)[0] if many else arg
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                found |= {name} if many else set()
                found |= _list_keys(sub)
    return found


def apply_overlay(
    data: dict[str, Any], variables: Mapping[str, str], settings_cls: type[BaseModel]
) -> list[tuple[str, str]]:
    """Set ``POP3BRIDGE_A__B__C`` variables into `data` in place; returns problems.

    Only variables whose first part is a top-level section count: other ``POP3BRIDGE_*``
    variables (the config path itself, test switches) are not configuration keys.
    """
    sections = set(settings_cls.model_fields)
    lists = _list_keys(settings_cls)
    items = []
    for name, value in variables.items():
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == CONFIG_ENV:
            continue
        rest = name[len(ENV_PREFIX) :]
        if rest.split("__", 1)[0].lower() in sections:
            items.append((rest, value))
    problems: list[tuple[str, str]] = []
    for rest, value in sorted(items, key=_sort_key):
        parts = rest.split("__")
        where = ENV_PREFIX + rest
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                index = _list_index(node, part)
                if index is None:
                    problems.append((where, f"no list element {part!r} (use an index or a name)"))
                    break
                if index == len(node):
                    node.append({})
                if last:
                    node[index] = _overlay_value(value)
                else:
                    if node[index] is None:
                        node[index] = {}
                    node = node[index]
            elif isinstance(node, dict):
                key = part.lower()
                if last:
                    node[key] = _overlay_value(value)
                else:
                    if node.get(key) is None:
                        node[key] = [] if key in lists else {}
                    node = node[key]
            else:
                problems.append((where, f"{part.lower()!r} is below a value that is not a section"))
                break
    return problems


def _list_index(node: list[Any], part: str) -> int | None:
    if part.isdigit():
        index = int(part)
        return index if index <= len(node) else None
    for i, item in enumerate(node):
        if isinstance(item, dict) and str(item.get("name", "")) == part:
            return i
    for i, item in enumerate(node):
        if isinstance(item, dict) and str(item.get("name", "")).casefold() == part.casefold():
            return i
    return None


def configured_sources(
    settings_cls: type[BaseSettings],
    *,
    path: str | os.PathLike[str] | None,
    env: Mapping[str, str],
    secrets_dir: str | os.PathLike[str] | None,
) -> NamedListOverlay:
    """The file, the secrets directory and the environment, as one pydantic-settings source."""
    layers: list[Mapping[str, str]] = []
    if secrets_dir is not None:
        layers.append(secrets_dir_variables(settings_cls, Path(secrets_dir)))
    layers.append(env)
    file = ConfigFileSource(settings_cls, Path(path) if path is not None else None)
    return NamedListOverlay(settings_cls, file, layers)

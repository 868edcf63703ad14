"""Where a secret comes from: written inline, read from a file, or taken from a variable.

Every secret key ``X`` of the configuration may be given three ways, and the YAML keys say
which: ``X`` (the value), ``X_file`` (a path; Kubernetes and Docker mount secrets as files) or
``X_env`` (the name of an environment variable). A model declares the secret once, as the field
``X`` annotated with `SecretField`; `resolve_secrets` folds ``X_file`` / ``X_env`` into ``X``
before the model is validated and returns a `SecretSource` for each, which the model keeps so
`pop3bridge config check` can say where a secret came from without ever showing it.

Files and variables are read at load time, so a missing file is a configuration error at
start-up, not a login failure an hour later.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from bridge.records import record

__all__ = [
    "SecretField",
    "SecretSource",
    "read_secret_file",
    "resolve_secrets",
    "strip_one_newline",
]

Problem = tuple[str, str]


@record
class SecretField:
    """Declares a model field as a secret with ``_file`` and ``_env`` forms.

    `required`: giving none of the three forms is a problem; a callable decides from the
    section's raw keys (a webhook's signing secret is required for one `format` only).
    `many`: the value may be a list (webhook secrets, for rotation), and so may ``_file``.
    """

    required: bool | Callable[[Mapping[str, Any]], bool] = False
    many: bool = False

    def is_required(self, data: Mapping[str, Any]) -> bool:
        return self.required(data) if callable(self.required) else self.required

    def keys(self, key: str) -> tuple[str, str, str]:
        return key, f"{key}_file", f"{key}_env"


@record
class SecretSource:
    """Where one secret was given: which of its keys, and the files or variable it named.

    Never holds the secret itself, so it can be printed and logged.
    """

    kind: Literal["inline", "file", "env"]
    names: tuple[str, ...] = ()
    count: int = 1
    listed: bool = False  # given as a list (a rotation), even of one

    def describe(self) -> str:
        """``inline``, ``file PATH``, ``files A, B`` or ``env $NAME``, for summaries."""
        if self.kind == "file":
            return "files " + ", ".join(self.names) if self.listed else f"file {self.names[0]}"
        if self.kind == "env":
            return f"env ${self.names[0]}"
        return f"inline ({self.count} for rotation)" if self.listed else "inline"


def read_secret_file(name: str, base: Path | None) -> str:
    """The text of secret file `name` (relative to `base`), less one trailing newline.

    Exactly one trailing newline goes: `echo secret > file` adds it, but a secret may
    legitimately end in other whitespace. Raises `ValueError` with a message for the user.
    """
    path = Path(name).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{str(path)!r} is a directory, expected a file") from None
    except PermissionError:
        raise ValueError(f"file {str(path)!r} is not readable by this process") from None
    except UnicodeDecodeError:
        raise ValueError(f"file {str(path)!r} is not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"file {str(path)!r} cannot be read ({exc.strerror})") from None
    return strip_one_newline(text)


def strip_one_newline(text: str) -> str:
    """`text` less one trailing newline (``\\n`` or ``\\r\\n``), the one `echo` adds."""
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


def resolve_secrets(
    data: dict[str, Any],
    fields: Mapping[str, SecretField],
    *,
    env: Mapping[str, str] | None,
    base_dir: Path | None,
) -> tuple[dict[str, SecretSource], list[Problem]]:
    """Fold each secret's ``_file`` / ``_env`` key into the secret's own key, in place.

    Returns the source of every secret given and the problems found (all of them, so one run
    reports every mistake). `env` defaults to ``os.environ``; relative files resolve against
    `base_dir` (the config file's directory) or the working directory.
    """
    sources: dict[str, SecretSource] = {}
    problems: list[Problem] = []
    for key, spec in fields.items():
        keys = spec.keys(key)
        given = [k for k in keys if data.get(k) is not None]
        raw = {k: data.pop(k) for k in keys[1:] if k in data}
        if len(given) > 1:
            problems.append((key, f"give only one of {', '.join(given)}"))
            continue
        if not given:
            if spec.is_required(data):
                problems.append((key, f"required: give {key}, {key}_file or {key}_env"))
            continue
        if given[0] == key:
            value = data[key]
            listed = isinstance(value, list)
            sources[key] = SecretSource("inline", count=len(value) if listed else 1, listed=listed)
            continue
        found, source, trouble = _read(
            given[0], raw[given[0]], spec, env=env if env is not None else os.environ, base=base_dir
        )
        problems += trouble
        if not trouble:
            data[key] = found
            sources[key] = source
    return sources, problems


def _read(
    key: str, raw: Any, spec: SecretField, *, env: Mapping[str, str], base: Path | None
) -> tuple[Any, SecretSource, list[Problem]]:
    from_file = key.endswith("_file")
    listed = isinstance(raw, list) and spec.many and from_file
    names = raw if listed else [raw]
    values: list[str] = []
    problems: list[Problem] = []
    for i, name in enumerate(names):
        where = f"{key}[{i}]" if listed else key
        if not isinstance(name, str) or not name:
            expected = (
                "expected a file path" if from_file else "expected an environment variable name"
            )
            problems.append((where, expected))
            continue
        if from_file:
            try:
                value = read_secret_file(name, base)
            except ValueError as exc:
                problems.append((where, str(exc)))
                continue
        elif name not in env:
            problems.append((where, f"environment variable {name!r} is not set"))
            continue
        else:
            value = env[name]
        if value == "":
            problems.append((where, "the secret is empty"))
        values.append(value)
    kind: Literal["file", "env"] = "file" if from_file else "env"
    source = SecretSource(kind, tuple(str(n) for n in names), len(values), listed)
    return (values if listed else values[0] if values else None), source, problems

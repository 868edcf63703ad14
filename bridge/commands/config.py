"""`pop3bridge config check` and `pop3bridge config reference`.

`check` loads the configuration exactly as `run` would (file + environment + secret files) and
prints a summary in which no secret appears, only where each one comes from. `reference`
prints the Markdown reference generated from the models; docs/configuration.md is that output,
committed, and a test keeps the two equal so the reference is never edited by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from bridge.commands._common import (
    EXIT_OK,
    ConfigProblem,
    add_config_argument,
    load,
    report_config_problem,
)
from bridge.config.errors import ConfigError
from bridge.config.files import check_files
from bridge.config.secret_source import SecretField
from bridge.config.units import ReferenceName

HELP = "validate the configuration or print its reference"

__all__ = ["HELP", "add_arguments", "reference_markdown", "run", "summary"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate the configuration and print a summary")
    add_config_argument(check)
    sub.add_parser("reference", help="print the Markdown reference of every configuration key")


def run(args: argparse.Namespace) -> int:
    if args.config_command == "reference":
        sys.stdout.write(reference_markdown())
        return EXIT_OK
    try:
        settings = load(args)
        # Loading resolves file keys; `check` also reads them (bridge/config/files.py).
        if problems := check_files(settings):
            raise ConfigProblem(str(ConfigError(problems)))
    except ConfigProblem as exc:
        return report_config_problem(exc)
    print(summary(settings))
    return EXIT_OK


# --------------------------------------------------------------------------- summary


def _source(section: Any, key: str) -> str:
    """Where a secret comes from, never its value."""
    source = section.secret_source(key)
    return "none" if source is None else str(source.describe())


def summary(settings: Any) -> str:
    """A human summary of validated settings; contains no secret values."""
    lines = ["configuration OK", f"state: {_safe_url(settings.state.url)}"]
    lines.append(f"webhooks: {len(settings.webhooks)}")
    for hook in settings.webhooks:
        lines.append(
            f"  - {hook.name}: {_safe_url(hook.url)} (secret: {_source(hook, 'secret')}; "
            f"timeout {hook.timeout:g}s; {len(hook.headers)} extra header(s))"
        )
    lines.append(f"accounts: {len(settings.accounts)}")
    for acc in settings.accounts:
        cred = "oauth2" if acc.oauth2 is not None else f"password: {_source(acc, 'password')}"
        state = "" if acc.enabled else " [disabled]"
        lines.append(
            f"  - {acc.name}{state}: {acc.username}@{acc.host}:{acc.port} tls={acc.tls} "
            f"auth={acc.auth} ({cred}) -> {acc.webhook}, every {acc.poll_interval:g}s, "
            f"on_delivered={acc.on_delivered}"
        )
    proxy = settings.proxy
    if proxy.listeners:
        target = (
            f"upstream {proxy.upstream.host}:{proxy.upstream.port} tls={proxy.upstream.tls}"
            if proxy.upstream is not None
            else f"{len(proxy.routes or [])} route(s)"
        )
        listeners = ", ".join(f"{x.name}={x.host}:{x.port}" for x in proxy.listeners)
        lines.append(f"proxy: {listeners}; {target}")
    ops = settings.ops
    lines.append(f"ops: {f'{ops.host}:{ops.port}' if ops.enabled else 'disabled'}")
    lines.append(f"logging: {settings.logging.format} {settings.logging.level}")
    return "\n".join(lines)


def _safe_url(url: str) -> str:
    from bridge.ops.logging import redact

    return redact(url)


# --------------------------------------------------------------------------- reference


def _type_name(annotation: Any, metadata: list[Any] | None = None) -> str:
    for item in metadata or []:
        if isinstance(item, ReferenceName):
            return item.name
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0], list(args[1:]))
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " or null"
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}"
    if annotation is SecretStr:
        return "secret string"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if annotation in (str, int, float, bool):
        return {str: "string", int: "integer", float: "number", bool: "boolean"}[annotation]
    return str(annotation)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(see below)"
        return f"`{json.dumps(value)}`"
    if field.default is PydanticUndefined:
        return "**required**"
    value = field.default
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _model_of(annotation: Any) -> tuple[type[BaseModel], bool] | None:
    """The nested model a field holds, and whether it is a list of them."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if origin is list and args:
        inner = _model_of(args[0])
        return (inner[0], True) if inner else None
    if origin in (Union, types.UnionType):
        for arg in args:
            found = _model_of(arg)
            if found:
                return found
    return None


def _sections(model: type[BaseModel], path: str) -> list[tuple[str, type[BaseModel]]]:
    out = [(path, model)]
    for name, field in model.model_fields.items():
        found = _model_of(field.annotation)
        if found:
            sub, many = found
            out += _sections(sub, f"{path}.{name}{'[]' if many else ''}".lstrip("."))
    return out


_INTRO = """\
# Configuration reference

<!-- Generated by `pop3bridge config reference` from bridge/config/. Do not edit by hand:
     change the models' descriptions and regenerate. A test fails when this file is stale. -->

The configuration is one YAML file, given with `--config FILE` or `$POP3BRIDGE_CONFIG`.
`pop3bridge config check` validates it (exit code 2 and one line per problem, naming the key)
and prints a summary without secrets.

**Environment overrides.** `POP3BRIDGE_<SECTION>__<KEY>...` sets any key, `__` separating
levels; list elements are addressed by index or by `name`, e.g.
`POP3BRIDGE_ACCOUNTS__support__POLL_INTERVAL=30s` or `POP3BRIDGE_WEBHOOKS__0__TIMEOUT=5`. A
value starting with `[` or `{` is read as a YAML list or map.

**Secrets directory.** With `POP3BRIDGE_SECRETS_DIR=/run/secrets` (a Kubernetes Secret volume
or Docker secrets), every file there named like an override variable, e.g.
`POP3BRIDGE_ACCOUNTS__support__PASSWORD`, sets that key to the file's text (surrounding
whitespace stripped); other files are ignored. Environment variables win over these files,
and both over the YAML file.

**Secrets.** Every secret key `X` also has `X_file` (read at start-up; one trailing newline is
stripped; relative paths are relative to the config file) and `X_env` (the name of an
environment variable). Give one of the three. Secrets never appear in output or logs.

**Other files** (`ca_file`, `cert_file`, `key_file`): relative paths are relative to the
config file too. `pop3bridge config check` reads each one and exits 2 naming the key when a
file is missing or unreadable, a CA bundle does not load, or a certificate and its key do not
load together.

**Sizes** are bytes or strings such as `"50MB"` (10^6) or `"1MiB"` (2^20). **Durations** are
seconds or strings such as `"10s"`, `"5m"`, `"1h30m"`, `"250ms"`.

**Accounts** may give `url: pop3s://user%40example.com@mail.example.com:995` instead of
`host`/`port`/`tls`/`username`; `pop3://` means no TLS unless `tls: starttls` (or
`starttls: true`). Omitted ports are 995 for implicit TLS and 110 otherwise.
"""


def _secret_rows(name: str, field: FieldInfo) -> list[str]:
    """The ``X_file`` and ``X_env`` rows of a secret key ``X`` (one declaration, three keys)."""
    spec = next((m for m in field.metadata if isinstance(m, SecretField)), None)
    if spec is None:
        return []
    _, file_key, env_key = spec.keys(name)
    files = "string or list of string or null" if spec.many else "string or null"
    held = "File(s) holding the secret" if spec.many else f"File holding `{name}`"
    return [
        f"| `{file_key}` | {files} | `null` | {held} (one trailing newline is stripped). |\n",
        f"| `{env_key}` | string or null | `null` | Environment variable holding `{name}`. |\n",
    ]


def reference_markdown() -> str:
    """The full Markdown reference; docs/configuration.md holds exactly this text."""
    from bridge.config import Settings
    from bridge.ops.metrics import metrics_markdown

    parts = [_INTRO]
    for path, model in _sections(Settings, ""):
        if not path:
            continue
        title = f"`{path}`"
        doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
        parts.append(f"\n## {title}\n")
        if doc and "Build from a dict" not in doc:
            parts.append(f"\n{doc}\n")
        parts.append("\n| Key | Type | Default | Description |\n|---|---|---|---|\n")
        for name, field in model.model_fields.items():
            kind = _type_name(field.annotation, list(field.metadata))
            desc = (field.description or "").replace("|", "\\|")
            parts.append(f"| `{name}` | {kind} | {_default(field)} | {desc} |\n")
            parts += _secret_rows(name, field)
    parts.append("\n## Metrics\n\nServed at `/metrics` on the ops endpoint.\n\n")
    parts.append(metrics_markdown())
    return "".join(parts)

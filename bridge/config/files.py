"""File keys that are not secrets (CA bundles, certificates, private keys): where they are, and
whether they load.

A relative path means the same file wherever the command runs: it is resolved against the
configuration file's directory, as the secrets' ``*_file`` keys are (`secret_source`). Loading
resolves paths only; reading the files is `check_files`'s job, which `pop3bridge config check`
runs, so a missing or broken file is found before deployment with its key named, and tests that
validate configurations written for a container do not need its files.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, ValidationInfo

from bridge.config.base import base_dir_of

__all__ = ["ConfigPath", "check_files", "resolve_path"]


def resolve_path(value: str, info: ValidationInfo) -> str:
    """`value` with ``~`` expanded, relative to the config file's directory when it is known."""
    path = Path(value).expanduser()
    base = base_dir_of(info)
    if not path.is_absolute() and base is not None:
        path = base / path
    return str(path)


ConfigPath = Annotated[str, AfterValidator(resolve_path)]


def _readable(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    return None


def _ca_problem(path: str) -> str | None:
    if (problem := _readable(path)) is not None:
        return problem
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        return f"{path} is not a PEM bundle of CA certificates ({exc})"
    return None


def _pair_problems(where: str, cert: str | None, key: str | None) -> list[tuple[str, str]]:
    problems = [
        (f"{where}.{name}", problem)
        for name, path in (("cert_file", cert), ("key_file", key))
        if path is not None and (problem := _readable(path)) is not None
    ]
    if problems or cert is None or key is None:
        return problems
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        return [
            (
                f"{where}.cert_file",
                f"{cert} and {key} do not load as a certificate and its key ({exc})",
            )
        ]
    return []


def check_files(settings: Any) -> list[tuple[str, str]]:
    """(key, problem) for every file key whose file is missing, unreadable or does not load."""
    problems: list[tuple[str, str]] = []

    def ca(where: str, section: Any) -> None:
        path = getattr(section, "ca_file", None)
        if path is not None and (problem := _ca_problem(path)) is not None:
            problems.append((f"{where}.ca_file", problem))

    for i, account in enumerate(settings.accounts):
        ca(f"accounts[{i}]", account)
    for i, hook in enumerate(settings.webhooks):
        ca(f"webhooks[{i}]", hook)
    proxy = settings.proxy
    if proxy is not None:
        if proxy.upstream is not None:
            ca("proxy.upstream", proxy.upstream)
        for i, route in enumerate(proxy.routes or []):
            ca(f"proxy.routes[{i}].upstream", route.upstream)
        for i, listener in enumerate(proxy.listeners):
            problems += _pair_problems(
                f"proxy.listeners[{i}]", listener.cert_file, listener.key_file
            )
    return problems

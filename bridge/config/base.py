"""The base of every configuration section, and of sections that hold secrets.

A section refuses unknown keys: a misspelt `pasword_file` must not silently mean "no password".
Validation gets a context from the loader: ``env`` (the mapping ``*_env`` secrets are looked up
in; ``os.environ`` when absent) and ``base_dir`` (the config file's directory, which relative
``*_file`` paths are relative to). The loader passes it both as pydantic's validation context
and in `LOAD_CONTEXT`, because validating a pydantic-settings `BaseSettings` hands its nested
models no context at all (pydantic-settings 2.16, pydantic-core 2.50: ``info.context`` is None
even for ``Settings.model_validate(d, context=...)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationInfo,
    model_validator,
)

from bridge.config.errors import KeyedProblem
from bridge.config.secret_source import SecretField, SecretSource, resolve_secrets

__all__ = ["LOAD_CONTEXT", "SecretSection", "Section", "base_dir_of", "env_of", "load_context"]

LOAD_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("LOAD_CONTEXT", default=None)


@contextmanager
def load_context(context: dict[str, Any]) -> Iterator[None]:
    """Make `context` what the sections validated inside the block read."""
    token = LOAD_CONTEXT.set(context)
    try:
        yield
    finally:
        LOAD_CONTEXT.reset(token)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _context(info: ValidationInfo) -> dict[str, Any]:
    if isinstance(info.context, dict):
        return info.context
    return LOAD_CONTEXT.get() or {}


def env_of(info: ValidationInfo) -> Any:
    """The loader's environment mapping, or None for ``os.environ``."""
    return _context(info).get("env")


def base_dir_of(info: ValidationInfo) -> Path | None:
    """The directory relative file keys resolve against (the config file's), if known."""
    base = _context(info).get("base_dir")
    return Path(base) if base is not None else None


class SecretSection(Section):
    """A section with `SecretField` fields: ``X`` / ``X_file`` / ``X_env`` fold into ``X``.

    `prepare` lets a section rewrite its raw keys first (an account's ``url`` may carry the
    password); its problems and the secrets' are reported together.
    """

    _secret_fields: ClassVar[dict[str, SecretField]]
    _secret_sources: dict[str, SecretSource] = PrivateAttr(default_factory=dict)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        # Called once the fields are built, so their `Annotated` metadata is there to read.
        super().__pydantic_init_subclass__(**kwargs)
        cls._secret_fields = {
            name: marker
            for name, field in cls.model_fields.items()
            for marker in field.metadata
            if isinstance(marker, SecretField)
        }

    @classmethod
    def prepare(cls, data: dict[str, Any]) -> list[tuple[str, str]]:
        """Rewrite raw `data` in place before the secrets are read; returns problems."""
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _fold_secrets(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        if not isinstance(data, dict):
            return handler(data)
        data = dict(data)
        problems = cls.prepare(data)
        sources, trouble = resolve_secrets(
            data, cls._secret_fields, env=env_of(info), base_dir=base_dir_of(info)
        )
        problems += trouble
        if problems:
            raise KeyedProblem(problems)
        section = handler(data)
        section._secret_sources = sources
        return section

    def secret_source(self, key: str) -> SecretSource | None:
        """Where secret `key` was given (None: not given), for summaries; never the value."""
        return self._secret_sources.get(key)

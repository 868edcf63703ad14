"""Configuration errors a user can act on: every problem names its key, none quotes a value.

Pydantic reports a location (``('accounts', 0, 'tls', 'function-before[...]')``) and a message
that may include the input. We rewrite each error into ``accounts[0].tls: <message>``, drop the
union-member noise from the path, and ask pydantic for errors without inputs: a value in the
wrong key may well be a password.

Validators that know better than pydantic which sub-key is wrong (a missing ``password_file``
is the problem of ``accounts[0].password_file``, not of ``accounts[0]``) raise `KeyedProblem`,
whose pairs are appended to the model's location.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from pydantic import ValidationError

__all__ = ["ConfigError", "KeyedProblem", "duplicates", "problems_of"]

Problem = tuple[str, str]


class ConfigError(Exception):
    """The configuration cannot be used. `problems` holds (key path, what is wrong) pairs."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        lines = [f"{key}: {msg}" if key else msg for key, msg in self.problems]
        super().__init__("\n".join(lines))


class KeyedProblem(ValueError):
    """Raised inside validators to attach problems to sub-keys of the model being validated.

    Pydantic only knows the location of the model; `problems_of` appends these keys so the
    user reads ``accounts[0].password_file`` instead of ``accounts[0]``.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{k}: {m}" if k else m for k, m in self.problems))


def duplicates(where: str, names: Iterable[str]) -> list[Problem]:
    """A problem for every name seen before in `names` (a list keyed by `name`)."""
    seen: set[str] = set()
    problems = []
    for i, name in enumerate(names):
        if name in seen:
            problems.append((f"{where}[{i}].name", f"duplicate name {name!r}"))
        seen.add(name)
    return problems


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def join_key(base: str, key: str) -> str:
    """`base` and a sub-key or ``[index]`` as the user writes the path."""
    if not key:
        return base
    if not base:
        return key
    return f"{base}{key}" if key.startswith("[") else f"{base}.{key}"


_TAGGED_UNION_NOISE = re.compile(
    r"\.(str|list\[str\]|SecretStr|list\[SecretStr\]|"
    r"function-after\[[^\]]*\]|function-before\[[^\]]*\]|"
    r"literal\[[^\]]*\]|int|float|bool)(?=\.|\[|$)"
)


def problems_of(exc: ValidationError) -> list[Problem]:
    """(key path, message) for every error of `exc`, each said once, no input quoted."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for err in exc.errors(include_input=False, include_url=False):
        base = _TAGGED_UNION_NOISE.sub("", _path(err["loc"]))
        original = (err.get("ctx") or {}).get("error")
        if isinstance(original, KeyedProblem):
            pairs = [(join_key(base, k), m) for k, m in original.problems]
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                msg = "required key is missing"
            elif err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; see `pop3bridge config reference`)"
            pairs = [(base, msg)]
        for pair in pairs:
            # A union (str | list[str]) reports the same key once per member; say it once.
            key = f"{pair[0]}\0{pair[1]}"
            if key not in seen:
                seen.add(key)
                problems.append(pair)
    return problems
